"""The resumable-job log: records survive, a torn last line is cut, a bad line is named, a finished
log packs to gzip and back."""

from __future__ import annotations

import pytest

from sglang_edsd.data.append_log import append_records, pack, packed, read_append_log, unpack
from sglang_edsd.data.chat import DataError


def test_records_round_trip_and_a_torn_tail_is_cut(tmp_path):
    path = tmp_path / "log.jsonl"
    with path.open("a", encoding="utf-8") as out:
        append_records(out, [{"id": "a", "x": 1}, {"id": "b", "x": "é"}])
    with path.open("a", encoding="utf-8") as out:
        out.write('{"id": "c", "x"')  # killed mid-write
    assert read_append_log(path, "record", ("id",)) == [{"id": "a", "x": 1}, {"id": "b", "x": "é"}]
    assert path.read_text(encoding="utf-8").endswith('"é"}\n')
    with path.open("a", encoding="utf-8") as out:  # resuming appends after the cut
        append_records(out, [{"id": "c", "x": 3}])
    assert [r["id"] for r in read_append_log(path, "record", ("id",))] == ["a", "b", "c"]


def test_missing_file_is_empty(tmp_path):
    assert read_append_log(tmp_path / "none.jsonl", "record") == []


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '{"x": 1}'])
def test_a_bad_complete_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": "a"}\n' + bad + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"log\.jsonl:2: not a benchmark record"):
        read_append_log(path, "benchmark record", ("id",))
    assert path.read_text(encoding="utf-8").endswith(bad + "\n")  # nothing removed


def test_a_packed_log_reads_the_same_and_unpacks_to_resume(tmp_path):
    path = tmp_path / "run.requests.jsonl"
    with path.open("a", encoding="utf-8") as out:
        append_records(out, [{"id": "a"}, {"id": "b"}])
    gz = pack(path)
    assert gz == packed(path) == tmp_path / "run.requests.jsonl.gz" and not path.exists()
    assert [r["id"] for r in read_append_log(path, "record", ("id",))] == ["a", "b"]
    first = gz.read_bytes()
    unpack(path)
    with path.open("a", encoding="utf-8") as out:
        append_records(out, [{"id": "c"}])
    assert [r["id"] for r in read_append_log(path, "record", ("id",))] == ["a", "b", "c"]
    path.write_text('{"id": "a"}\n{"id": "b"}\n', encoding="utf-8")
    assert pack(path).read_bytes() == first  # same records, same bytes: a rerun changes no file
