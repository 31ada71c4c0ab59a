"""Corpus adapters produce the manifest table from each corpus's real layout."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from corpus_builders import (
    IEMOCAP_KEPT_PER_SESSION,
    build_cremad,
    build_emodb,
    build_iemocap,
    build_ravdess,
    emodb_names,
)

from budget.corpora import MANIFEST_COLUMNS, find_root, get_adapter, load_corpus
from budget.corpora.iemocap import read_evaluation, read_transcription
from budget.errors import BudgetError


def check_manifest(manifest: pd.DataFrame) -> None:
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert manifest["utt_id"].is_unique
    assert all(Path(p).is_file() for p in manifest["path"])


class TestIemocap:
    def test_default_keeps_four_classes_with_excited_merged_into_happy(self, tmp_path):
        manifest = load_corpus("iemocap", build_iemocap(tmp_path))
        check_manifest(manifest)
        expected = {label: 5 * n for label, n in IEMOCAP_KEPT_PER_SESSION.items()}
        assert manifest["label"].value_counts().to_dict() == expected
        happy_sources = set(manifest.loc[manifest["label"] == "happy", "source_label"])
        assert happy_sources == {"hap", "exc"}
        assert not set(manifest["source_label"]) & {"fru", "xxx", "sur", "fea", "dis", "oth"}

    def test_groups_speakers_and_text(self, tmp_path):
        manifest = load_corpus("iemocap", build_iemocap(tmp_path)).set_index("utt_id")
        assert sorted(manifest["group"].unique()) == ["Ses01", "Ses02", "Ses03", "Ses04", "Ses05"]
        row = manifest.loc["Ses02F_impro01_M001"]
        assert (row["speaker"], row["group"], row["session"], row["gender"]) == ("Ses02M", "Ses02", 2, "M")
        assert row["text"] == "I miss her."
        assert row["mode"] == "impro"
        assert manifest.loc["Ses01F_script01_1_F001", "mode"] == "script"
        assert manifest.loc["Ses01F_script01_1_F001", "path"].endswith(
            "Session1/sentences/wav/Ses01F_script01_1/Ses01F_script01_1_F001.wav"
        )

    def test_all_classes_keeps_every_category(self, tmp_path):
        manifest = load_corpus("iemocap", build_iemocap(tmp_path, sessions=1), classes="all")
        assert len(manifest) == 11
        assert set(manifest["label"]) == {
            "neutral", "happy", "excited", "sad", "angry", "frustrated", "no_agreement", "surprised"
        }  # fmt: skip

    def test_annotator_lines_are_not_utterances(self, tmp_path):
        build_iemocap(tmp_path, sessions=1)
        rows = read_evaluation(tmp_path / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt")
        assert [r["utt_id"] for r in rows] == [f"Ses01F_impro01_{s}" for s in ("F000", "M000", "F001", "M001", "F002", "M002", "F003")]
        assert rows[0]["start"] == 0.5 and rows[0]["end"] == 1.8
        assert (rows[0]["valence"], rows[0]["activation"], rows[0]["dominance"]) == (2.5, 3.0, 3.5)

    def test_transcript_lines_that_are_not_utterances_are_skipped(self, tmp_path):
        build_iemocap(tmp_path, sessions=1)
        texts = read_transcription(tmp_path / "Session1/dialog/transcriptions/Ses01F_impro01.txt")
        assert "Ses01F_impro01_MXX0" not in texts
        assert len(texts) == 7
        assert texts["Ses01F_impro01_F000"] == "Excuse me."

    def test_missing_sessions_is_a_clear_error(self, tmp_path):
        with pytest.raises(BudgetError, match="no Session1..5 folders"):
            load_corpus("iemocap", tmp_path)


class TestEmodb:
    def test_file_names_parsed(self, tmp_path):
        build_emodb(tmp_path, ["03a01Fa.wav", "16b10Wb.wav", "09a05Tc.wav"])
        manifest = load_corpus("emodb", tmp_path).set_index("utt_id")
        row = manifest.loc["03a01Fa"]
        assert (row["label"], row["speaker"], row["group"], row["source_label"]) == ("happy", "03", "03", "F")
        assert row["text"] == "Der Lappen liegt auf dem Eisschrank."
        assert manifest.loc["16b10Wb", "label"] == "angry"
        assert manifest.loc["16b10Wb", "gender"] == "F"
        assert manifest.loc["09a05Tc", "label"] == "sad"

    def test_root_may_be_the_wav_folder(self, tmp_path):
        build_emodb(tmp_path, emodb_names(14))
        assert len(load_corpus("emodb", tmp_path / "wav")) == 14

    def test_foreign_file_names_are_an_error(self, tmp_path):
        build_emodb(tmp_path, ["03a01Fa.wav", "notes.wav"])
        with pytest.raises(BudgetError, match="notes.wav"):
            load_corpus("emodb", tmp_path)

    def test_real_emodb_counts(self, shared_emodb):
        manifest = load_corpus("emodb", shared_emodb)
        check_manifest(manifest)
        assert len(manifest) == 535
        assert manifest["group"].nunique() == 10
        assert manifest["label"].value_counts().to_dict() == {
            "angry": 127, "boredom": 81, "neutral": 79, "happy": 71, "fearful": 69, "sad": 62, "disgust": 46
        }  # fmt: skip
        assert len(load_corpus("emodb", shared_emodb, classes="neutral,happy,sad,angry")) == 339
        # every sentence in every emotion: each text appears with several labels
        assert (manifest.groupby("text")["label"].nunique() >= 6).all()


class TestRavdess:
    def test_speech_files_parsed_and_song_files_skipped(self, tmp_path):
        manifest = load_corpus("ravdess", build_ravdess(tmp_path, actors=4))
        check_manifest(manifest)
        assert len(manifest) == 4 * 8 * 2
        assert manifest["group"].nunique() == 4
        assert set(manifest["label"]) == {
            "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"
        }  # fmt: skip
        row = manifest.set_index("utt_id").loc["03-01-03-01-02-01-03"]
        assert (row["label"], row["speaker"], row["gender"]) == ("happy", "actor03", "M")
        assert row["text"] == "Dogs are sitting by the door"

    def test_canonical_labels_match_other_corpora(self, tmp_path):
        manifest = load_corpus("ravdess", build_ravdess(tmp_path, actors=2), classes="neutral,happy,sad,angry")
        assert sorted(manifest["label"].unique()) == ["angry", "happy", "neutral", "sad"]
        assert set(manifest.loc[manifest["label"] == "happy", "source_label"]) == {"03"}


class TestCremad:
    def test_file_names_parsed(self, tmp_path):
        manifest = load_corpus("crema-d", build_cremad(tmp_path))
        check_manifest(manifest)
        assert len(manifest) == 3 * 3 * 6
        row = manifest.set_index("utt_id").loc["1002_DFA_HAP_MD"]
        assert (row["label"], row["group"], row["level"]) == ("happy", "1002", "medium")
        assert row["text"] == "Don't forget a jacket."
        assert get_adapter("cremad").name == "crema-d"


class TestCsv:
    def test_relative_paths_aliases_and_defaults(self, tmp_path):
        build_emodb(tmp_path / "audio", ["03a01Fa.wav", "08a02Wa.wav", "09a04Na.wav"])
        (tmp_path / "corpus.csv").write_text(
            "path,label,speaker,text,channel\n"
            "audio/wav/03a01Fa.wav,Joy,s1,hello,phone\n"
            "audio/wav/08a02Wa.wav,ang,s2,,studio\n"
            "audio/wav/09a04Na.wav,calmness,s2,bye,studio\n"
        )
        manifest = load_corpus("csv", tmp_path / "corpus.csv").set_index("utt_id")
        assert list(manifest["label"]) == ["happy", "angry", "calmness"]
        assert list(manifest["group"]) == ["s1", "s2", "s2"]
        assert list(manifest["text"]) == ["hello", "", "bye"]
        assert list(manifest["channel"]) == ["phone", "studio", "studio"]
        assert all(Path(p).is_file() for p in manifest["path"])

    def test_a_misspelt_emotion_is_refused_and_a_custom_class_kept(self, tmp_path):
        build_emodb(tmp_path / "audio", ["03a01Fa.wav", "08a02Wa.wav", "09a04Na.wav"])
        rows = "audio/wav/03a01Fa.wav,happy,s1\naudio/wav/08a02Wa.wav,{},s2\naudio/wav/09a04Na.wav,content,s2\n"
        (tmp_path / "typo.csv").write_text("path,label,speaker\n" + rows.format("hapy"))
        with pytest.raises(BudgetError, match="label 'hapy' .* looks like a misspelling of 'happy'"):
            load_corpus("csv", tmp_path / "typo.csv")
        (tmp_path / "fine.csv").write_text("path,label,speaker\n" + rows.format("happy"))
        assert sorted(load_corpus("csv", tmp_path / "fine.csv")["label"]) == ["content", "happy", "happy"]

    def test_missing_columns_are_named(self, tmp_path):
        (tmp_path / "manifest.csv").write_text("file,emotion\na.wav,happy\n")
        with pytest.raises(BudgetError, match="path, label, speaker"):
            load_corpus("csv", tmp_path)

    def test_duplicate_ids_rejected(self, tmp_path):
        (tmp_path / "manifest.csv").write_text("path,label,speaker,utt_id\na.wav,happy,s1,x\nb.wav,sad,s1,x\n")
        with pytest.raises(BudgetError, match="duplicate utt_id 'x'"):
            load_corpus("csv", tmp_path)


class TestRoots:
    def test_data_dir_env_supplies_the_root(self, tmp_path, monkeypatch):
        build_emodb(tmp_path / "emodb", emodb_names(5))
        monkeypatch.setenv("BUDGET_DATA_DIR", str(tmp_path))
        assert find_root("emodb") == (tmp_path / "emodb").resolve()
        assert len(load_corpus("emodb")) == 5

    def test_missing_root_says_what_to_do(self):
        with pytest.raises(BudgetError, match="budget corpus fetch emodb"):
            find_root("emodb")
        with pytest.raises(BudgetError, match="--root PATH"):
            find_root("iemocap")

    def test_unknown_corpus(self):
        with pytest.raises(BudgetError, match="unknown corpus 'timit'"):
            get_adapter("timit")


def test_every_reader_takes_a_string_path(tmp_path):
    from budget.corpora.iemocap import read_iemocap

    root = build_iemocap(tmp_path)
    assert len(read_iemocap(str(root))) == len(read_iemocap(root)) > 0
