"""Each public-set converter on a tiny fixture written in that set's original format.

Videos are empty placeholder files: converters only locate files, they never decode them
(tests/test_convert_pipeline.py runs real videos through preparation)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from prepare.convert.__main__ import main as convert_main
from prepare.convert.msrvtt import CAPTION_CHOICE_QUESTION


def touch(root: Path, *relative_paths: str) -> None:
    for relative in relative_paths:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_jsonl(data: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (data / "annotations" / f"{name}.jsonl").read_text().splitlines()]


def written(data: Path) -> set[str]:
    return {path.stem for path in (data / "annotations").glob("*.jsonl")}


def convert(dataset: str, src: Path, data: Path, *extra: str, videos: Path | None = None) -> dict:
    argv = [dataset, "--src", str(src), "--out", str(data), *extra]
    if videos is not None:
        argv += ["--videos", str(videos)]
    assert convert_main(argv) == 0
    return json.loads((data / "annotations" / f"convert_{dataset}.json").read_text())


@pytest.fixture
def msrvtt(tmp_path: Path) -> tuple[Path, Path]:
    src, videos = tmp_path / "src", tmp_path / "videos"
    write(src / "msrvtt_data" / "MSRVTT_data.json", json.dumps({
        "videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "train"},
                   {"video_id": "video2", "split": "validate"}, {"video_id": "video3", "split": "test"}],
        "sentences": [{"video_id": "video0", "caption": "a man  cooks", "sen_id": 0},
                      {"video_id": "video1", "caption": "a cat", "sen_id": 1},
                      {"video_id": "video0", "caption": "someone cooks", "sen_id": 2},
                      {"video_id": "video2", "caption": "a car", "sen_id": 3},
                      {"video_id": "video3", "caption": "a test clip", "sen_id": 4},
                      {"video_id": "video1", "sen_id": 5}]}))  # no caption: malformed
    write(src / "msrvtt_data" / "MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo1\nvideo2\nvideo5\n")
    write(src / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv",
          'key,vid_key,video_id,sentence\nret0,msr3,video3,"a man, cooking"\nret1,msr4,video4,a dog\n')
    touch(videos, "TrainValVideo/video0.mp4", "TrainValVideo/video1.mp4", "TrainValVideo/video2.mp4",
          "TestVideo/video3.mp4")
    return src, videos


def test_msrvtt_retrieval_9k_and_1k_a(msrvtt, tmp_path: Path) -> None:
    src, videos = msrvtt
    data = tmp_path / "DATA"
    summary = convert("msrvtt-ret", src, data, videos=videos)
    assert read_jsonl(data, "captions_train") == [
        {"video": "TrainValVideo/video0.mp4", "caption": "a man cooks"},
        {"video": "TrainValVideo/video0.mp4", "caption": "someone cooks"},
        {"video": "TrainValVideo/video1.mp4", "caption": "a cat"},
        {"video": "TrainValVideo/video2.mp4", "caption": "a car"},
    ]
    assert read_jsonl(data, "captions_test") == [{"video": "TestVideo/video3.mp4", "caption": "a man, cooking"}]
    assert written(data) == {"captions_train", "captions_test"}
    assert summary["skipped"] == {"malformed": 1, "no_captions": 1, "missing_video": 1}
    assert summary["skipped_examples"]["missing_video"][0].startswith("msrvtt_data/MSRVTT_JSFUSION_test.csv:3: ")
    assert summary["skipped_examples"]["malformed"][0].startswith("msrvtt_data/MSRVTT_data.json:1 [sentences 5]: ")
    link = data / "videos" / "TrainValVideo" / "video0.mp4"
    assert link.is_symlink() and Path(os.readlink(link)) == (videos / "TrainValVideo" / "video0.mp4").resolve()


def test_msrvtt_retrieval_official_split(msrvtt, tmp_path: Path) -> None:
    src, videos = msrvtt
    data = tmp_path / "DATA"
    convert("msrvtt-ret", src, data, "--protocol", "full", videos=videos)
    assert [row["caption"] for row in read_jsonl(data, "captions_train")] == ["a man cooks", "someone cooks", "a cat"]
    assert read_jsonl(data, "captions_val") == [{"video": "TrainValVideo/video2.mp4", "caption": "a car"}]
    assert read_jsonl(data, "captions_test") == [{"video": "TestVideo/video3.mp4", "caption": "a test clip"}]


def test_msrvtt_multiple_choice(msrvtt, tmp_path: Path) -> None:
    src, videos = msrvtt
    header = "key\tvid_key\tvideo_id\ta1\ta2\ta3\ta4\ta5\tanswer\n"
    write(src / "MSR_MC_test.csv", header
          + "mc0\tmsr3\tvideo3\ta dog\ta \"cat\"\ta man cooks\ta car\ta bird\t2\n"
          + "mc1\tmsr3\tvideo3\tx\ty\tz\tu\tv\t7\n"     # answer out of range
          + "mc2\tmsr3\tvideo3\tx\ty\tz\n")             # too few fields
    data = tmp_path / "DATA"
    summary = convert("msrvtt-mc", src, data, videos=videos)
    assert read_jsonl(data, "qa_mc_test") == [{"video": "TestVideo/video3.mp4", "question": CAPTION_CHOICE_QUESTION,
                                               "options": ["a dog", 'a "cat"', "a man cooks", "a car", "a bird"],
                                               "answer": 2}]
    assert summary["skipped"] == {"malformed": 2}
    assert [example.split(":")[1] for example in summary["skipped_examples"]["malformed"]] == ["3", "4"]


def test_msrvtt_qa(msrvtt, tmp_path: Path) -> None:
    src, videos = msrvtt
    write(src / "train_qa.json", json.dumps([
        {"answer": "man", "id": 0, "question": "who is cooking?", "video_id": 0},
        {"answer": "", "id": 1, "question": "what?", "video_id": 1}]))
    write(src / "test_qa.json", json.dumps([{"answer": "two", "id": 2, "question": "how many?", "video_id": 3}]))
    data = tmp_path / "DATA"
    summary = convert("msrvtt-qa", src, data, videos=videos)
    assert read_jsonl(data, "qa_oe_train") == [
        {"video": "TrainValVideo/video0.mp4", "question": "who is cooking?", "answer": "man"}]
    assert read_jsonl(data, "qa_oe_test") == [
        {"video": "TestVideo/video3.mp4", "question": "how many?", "answer": "two"}]
    assert summary["skipped"] == {"malformed": 1}
    assert summary["skipped_examples"]["malformed"] == [
        "train_qa.json:1 [1]: needs a non-empty 'question' and 'answer'"]  # file:line [index in the JSON list]


def test_msvd_qa_maps_video_ids_through_youtube_mapping(tmp_path: Path) -> None:
    src = tmp_path / "msvd"
    write(src / "youtube_mapping.txt", "abc_1_5 vid1\n-xyz_0_10 vid2\nnot a mapping line\n")
    write(src / "train_qa.json", json.dumps([
        {"answer": "dog", "id": 0, "question": "what is running?", "video_id": 1},
        {"answer": "cat", "id": 1, "question": "what sleeps?", "video_id": 2},     # clip file absent
        {"answer": "car", "id": 2, "question": "what drives?", "video_id": 99}]))  # not in the mapping
    touch(src, "YouTubeClips/abc_1_5.avi")
    data = tmp_path / "DATA"
    summary = convert("msvd-qa", src, data)
    assert read_jsonl(data, "qa_oe_train") == [
        {"video": "YouTubeClips/abc_1_5.avi", "question": "what is running?", "answer": "dog"}]
    assert summary["skipped"] == {"malformed": 1, "missing_video": 1, "unknown_video": 1}
    assert summary["skipped_examples"]["malformed"] == ["youtube_mapping.txt:3: expected '<clip name> vid<N>'"]


MC_HEADER = "gif_name\tquestion\ta1\ta2\ta3\ta4\ta5\tanswer\tvid_id\tkey\n"


@pytest.mark.parametrize("task", ["action", "transition"])
def test_tgif_multiple_choice(tmp_path: Path, task: str) -> None:
    src = tmp_path / "tgif"
    write(src / "dataset" / f"Train_{task}_question.csv", MC_HEADER
          + "tumblr_a\tWhat does the man do 3 times ?\tnod\tjump\tclap\twave\tspin\t4\tACTION1\t1\n"
          + "tumblr_a\tWhat does he do ?\tnod\tjump\tclap\twave\tspin\tx\tACTION2\t2\n")
    write(src / "dataset" / f"Test_{task}_question.csv", MC_HEADER
          + "tumblr_b\tWhat does the cat do after sitting ?\trun\tsleep\teat\tjump\tsit\t0\tTRANS1\t3\n")
    touch(src, "gifs/tumblr_a.gif", "gifs/tumblr_b.mp4")  # b re-encoded to mp4 after download
    data = tmp_path / "DATA"
    summary = convert(f"tgif-{task}", src, data)
    assert read_jsonl(data, "qa_mc_train") == [{"video": "gifs/tumblr_a.gif", "question": "What does the man do 3 times ?",
                                                "options": ["nod", "jump", "clap", "wave", "spin"], "answer": 4}]
    assert read_jsonl(data, "qa_mc_test") == [{"video": "gifs/tumblr_b.mp4",
                                               "question": "What does the cat do after sitting ?",
                                               "options": ["run", "sleep", "eat", "jump", "sit"], "answer": 0}]
    assert summary["skipped"] == {"malformed": 1}
    assert summary["skipped_examples"]["malformed"][0].startswith(f"dataset/Train_{task}_question.csv:3: answer 'x'")


def test_tgif_frameqa(tmp_path: Path) -> None:
    src = tmp_path / "tgif"
    header = "gif_name\tquestion\tanswer\ttype\tvid_id\tkey\tdescription\n"
    write(src / "Train_frameqa_question.csv", header
          + "tumblr_a\twhat is the man's \"hat\" color ?\tblack\t2\tFRAMEQA1\t1\ta man in a black hat .\n"
          + "tumblr_gone\twhat runs ?\tdog\t0\tFRAMEQA2\t2\ta dog runs .\n")
    write(src / "Test_frameqa_question.csv", header + "tumblr_a\thow many men ?\ttwo\t1\tFRAMEQA3\t3\ttwo men .\n")
    touch(src, "gifs/tumblr_a.gif")
    data = tmp_path / "DATA"
    summary = convert("tgif-frameqa", src, data)
    assert read_jsonl(data, "qa_oe_train") == [
        {"video": "gifs/tumblr_a.gif", "question": "what is the man's \"hat\" color ?", "answer": "black"}]
    assert read_jsonl(data, "qa_oe_test") == [{"video": "gifs/tumblr_a.gif", "question": "how many men ?",
                                               "answer": "two"}]
    assert summary["skipped"] == {"missing_video": 1}
    assert summary["skipped_examples"]["missing_video"][0].startswith("Train_frameqa_question.csv:3: ")


@pytest.fixture
def didemo(tmp_path: Path) -> Path:
    src = tmp_path / "didemo"
    write(src / "data" / "train_data.json", json.dumps([
        {"video": "v1.mov", "description": "the dog jumps", "times": [[2, 3], [2, 3], [1, 1]], "annotation_id": 0},
        {"video": "v1.mov", "description": "a dog sits", "times": [[0, 0], [0, 1], [0, 0]], "annotation_id": 1},
        {"video": "v2.mov", "description": "a car", "times": [[1, 1], [4, 5], [4, 5], [1, 1]], "annotation_id": 2},
        {"video": "v2.mov", "description": "bad times", "times": [[3, 1]], "annotation_id": 3},
        {"video": "v3.mov", "description": "no file", "times": [[0, 0]], "annotation_id": 4}]))
    write(src / "data" / "test_data.json", json.dumps([
        {"video": "v4.mov", "description": "a test", "times": [[5, 5]], "annotation_id": 5}]))
    touch(src, "videos/v1.mp4", "videos/v2.mov", "videos/v4.mov")  # v1 re-encoded to mp4
    return src


def test_didemo_paragraphs_concatenate_descriptions_in_moment_order(didemo: Path, tmp_path: Path) -> None:
    data = tmp_path / "DATA"
    summary = convert("didemo", didemo, data)
    assert read_jsonl(data, "captions_train") == [{"video": "videos/v1.mp4", "caption": "a dog sits the dog jumps"},
                                                  {"video": "videos/v2.mov", "caption": "a car"}]
    assert read_jsonl(data, "captions_test") == [{"video": "videos/v4.mov", "caption": "a test"}]
    assert summary["skipped"] == {"malformed": 1, "missing_video": 1}
    assert summary["skipped_examples"]["malformed"][0].startswith("data/train_data.json:1 [3]: ")


def test_didemo_moments_carry_segment_times_in_seconds(didemo: Path, tmp_path: Path) -> None:
    data = tmp_path / "DATA"
    convert("didemo", didemo, data, "--mode", "moments")
    assert read_jsonl(data, "captions_train") == [
        {"video": "videos/v1.mp4", "caption": "the dog jumps", "start": 10.0, "end": 20.0},
        {"video": "videos/v1.mp4", "caption": "a dog sits", "start": 0.0, "end": 5.0},
        # [1, 1] and [4, 5] tie 2:2; the earlier annotator's wins
        {"video": "videos/v2.mov", "caption": "a car", "start": 5.0, "end": 10.0},
    ]
    assert read_jsonl(data, "captions_test") == [{"video": "videos/v4.mov", "caption": "a test", "start": 25.0,
                                                  "end": 30.0}]


CLIP_A = "1001_Movie_A_00.00.01.000-00.00.03.000"
CLIP_B = "3002_MOVIE_B_01.02.03.400-01.02.05.600"
TIMES = "00.00.01.000\t00.00.03.000\t00.00.01.000\t00.00.03.000"


@pytest.fixture
def lsmdc(tmp_path: Path) -> Path:
    src = tmp_path / "lsmdc"
    touch(src, f"avi/1001_Movie_A/{CLIP_A}.avi", f"avi/3002_MOVIE_B/{CLIP_B}.avi")
    return src


def test_lsmdc_retrieval(lsmdc: Path, tmp_path: Path) -> None:
    write(lsmdc / "LSMDC16_annos_training.csv",
          f"{CLIP_A}\t{TIMES}\tSOMEONE opens the \"red\" door.\n{CLIP_A}\t{TIMES}\n"
          f"3003_MISSING_00.00.01.000-00.00.02.000\t{TIMES}\tGone.\n")
    write(lsmdc / "LSMDC16_challenge_1000_publictect.csv", f"{CLIP_B}\t{TIMES}\tSOMEONE smiles.\n")
    data = tmp_path / "DATA"
    summary = convert("lsmdc-ret", lsmdc, data, videos=lsmdc / "avi")
    assert read_jsonl(data, "captions_train") == [{"video": f"1001_Movie_A/{CLIP_A}.avi",
                                                   "caption": 'SOMEONE opens the "red" door.'}]
    assert read_jsonl(data, "captions_test") == [{"video": f"3002_MOVIE_B/{CLIP_B}.avi", "caption": "SOMEONE smiles."}]
    assert summary["skipped"] == {"malformed": 1, "missing_video": 1}
    assert summary["skipped_examples"]["malformed"] == [
        "LSMDC16_annos_training.csv:2: expected 6 fields ('\\t'-separated), got 5"]


def test_lsmdc_multiple_choice(lsmdc: Path, tmp_path: Path) -> None:
    train_options = ["SOMEONE opens the door.", "He runs.", "She sings.", "They eat.", "It rains."]
    write(lsmdc / "LSMDC16_multiple_choice_train.csv", f"{CLIP_A}\t{TIMES}\t" + "\t".join(train_options) + "\n")
    write(lsmdc / "LSMDC16_multiple_choice_test_randomized.csv",
          f"{CLIP_B}\t{TIMES}\tA\tB\tC\tD\tE\t3\n{CLIP_B}\t{TIMES}\tA\tB\tC\tD\tE\t6\n")
    data = tmp_path / "DATA"
    summary = convert("lsmdc-mc", lsmdc, data, videos=lsmdc / "avi")
    (train_row,) = read_jsonl(data, "qa_mc_train")
    assert sorted(train_row["options"]) == sorted(train_options)
    assert train_row["options"][train_row["answer"]] == "SOMEONE opens the door."
    assert train_row["question"] == CAPTION_CHOICE_QUESTION
    assert read_jsonl(data, "qa_mc_test") == [{"video": f"3002_MOVIE_B/{CLIP_B}.avi", "question": CAPTION_CHOICE_QUESTION,
                                               "options": ["A", "B", "C", "D", "E"], "answer": 2}]
    assert summary["skipped"] == {"malformed": 1}
    # The shuffle is seeded by the row, so a rerun gives the same order.
    convert("lsmdc-mc", lsmdc, data, videos=lsmdc / "avi")
    assert read_jsonl(data, "qa_mc_train") == [train_row]


def test_lsmdc_fill_in_the_blank_becomes_open_ended_qa(lsmdc: Path, tmp_path: Path) -> None:
    write(lsmdc / "LSMDC16_annos_training_FIB.csv",
          f"{CLIP_A}\t{TIMES}\tSOMEONE opens the door.\tSOMEONE _____ the door.\topens\n"
          f"{CLIP_A}\t{TIMES}\tSOMEONE opens the door.\tSOMEONE opens the door.\topens\n")
    write(lsmdc / "LSMDC16_annos_test_FIB.csv",
          f"{CLIP_B}\t{TIMES}\tSOMEONE smiles at her.\tSOMEONE smiles at _____.\ther\n")
    data = tmp_path / "DATA"
    summary = convert("lsmdc-fib", lsmdc, data, videos=lsmdc / "avi")
    assert read_jsonl(data, "qa_oe_train") == [{"video": f"1001_Movie_A/{CLIP_A}.avi",
                                                "question": "SOMEONE _____ the door.", "answer": "opens"}]
    assert read_jsonl(data, "qa_oe_test") == [{"video": f"3002_MOVIE_B/{CLIP_B}.avi",
                                               "question": "SOMEONE smiles at _____.", "answer": "her"}]
    assert summary["skipped"] == {"malformed": 1}


WEBVID_HEADER = "videoid,contentUrl,duration,page_dir,name\n"


def test_webvid_default_layout_and_mapping(tmp_path: Path) -> None:
    src, videos = tmp_path / "webvid", tmp_path / "downloads"
    write(src / "results_2M_train.csv", WEBVID_HEADER
          + '1001,https://cdn/1001.mp4,PT00H00M10S,001_050,"A cat, sleeping"\n'
          + "1002,https://cdn/1002.mp4,PT00H00M12S,001_050,Not downloaded\n")
    write(src / "results_2M_val.csv", WEBVID_HEADER + "2001,https://cdn/2001.mp4,PT00H00M08S,val_dir,A dog\n")
    touch(videos, "001_050/1001.mp4", "val_dir/2001.mp4", "by_url/x.mp4")
    data = tmp_path / "DATA"
    summary = convert("webvid", src, data, videos=videos)
    assert read_jsonl(data, "captions_train") == [{"video": "001_050/1001.mp4", "caption": "A cat, sleeping"}]
    assert read_jsonl(data, "captions_val") == [{"video": "val_dir/2001.mp4", "caption": "A dog"}]
    assert summary["skipped"] == {"missing_video": 1}

    mapping = write(tmp_path / "map.tsv", "# key\tpath\nhttps://cdn/1002.mp4\tby_url/x.mp4\n")
    convert("webvid", src, data, "--mapping", str(mapping), videos=videos)
    assert read_jsonl(data, "captions_train") == [{"video": "by_url/x.mp4", "caption": "Not downloaded"}]


def test_cc3m_with_mapping_warns_that_images_are_not_extracted(tmp_path: Path) -> None:
    src, images = tmp_path / "cc3m", tmp_path / "images"
    write(src / "Train_GCC-training.tsv", "a dog on grass\thttp://img/1.jpg\nnot downloaded\thttp://img/2.jpg\n")
    touch(images, "00000/000000001.jpg")
    mapping = write(tmp_path / "map.tsv", "http://img/1.jpg\t00000/000000001.jpg\n")
    data = tmp_path / "DATA"
    summary = convert("cc3m", src, data, "--mapping", str(mapping), videos=images)
    assert read_jsonl(data, "captions_train") == [{"video": "00000/000000001.jpg", "caption": "a dog on grass"}]
    assert summary["skipped"] == {"missing_video": 1}
    assert any(".jpg" in warning and "does not extract" in warning for warning in summary["warnings"])


def test_a_video_path_leading_outside_the_videos_folder_is_a_malformed_row(didemo: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.mov").write_bytes(b"not for this data set")
    entries = json.loads((didemo / "data" / "train_data.json").read_text())
    entries.append({"video": "../outside.mov", "description": "escapes", "times": [[0, 0]], "annotation_id": 6})
    write(didemo / "data" / "train_data.json", json.dumps(entries, indent=1))
    data = tmp_path / "DATA"
    summary = convert("didemo", didemo, data, "--mode", "moments")
    assert "escapes" not in {row["caption"] for row in read_jsonl(data, "captions_train")}
    assert summary["skipped"]["malformed"] == 2 and not (data / "outside.mov").exists()
    assert any(example.startswith("data/train_data.json:85 [5]: video path '../outside.mov' must be relative")
               for example in summary["skipped_examples"]["malformed"])
