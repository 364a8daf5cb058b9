"""Rendering and the `leaktrace triage` command line."""
import io
import json
import tarfile
from pathlib import Path

import pytest

from leaktrace.cli import main
from leaktrace.commands.triage import parse_duration
from leaktrace.base.errors import EX_USAGE, UsageError
from leaktrace.triage import RENDERERS, assess, read_capture, read_oom_settings, to_data, triage

DATA = Path(__file__).parents[1] / "data" / "triage"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    target = tmp_path_factory.mktemp("dentry")
    with tarfile.open(DATA / "dentry_growth.tar.gz") as archive:
        archive.extractall(target)
    return to_data(triage(read_capture(target)), assess(read_oom_settings()))


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_every_format_names_the_grower_and_the_next_command(name, data):
    out = io.StringIO()
    RENDERERS[name](data, out)
    text = out.getvalue()
    assert "dentry" in text and "leaktrace kernel --cache dentry" in text
    assert "vm.oom_dump_tasks" in text


def test_json_round_trips_the_data(data):
    out = io.StringIO()
    RENDERERS["json"](data, out)
    parsed = json.loads(out.getvalue())
    assert parsed["growers"]["slab_reclaimable"][0]["reclaimable"] is True
    assert {v["category"] for v in parsed["verdicts"]} >= {"user_anon", "vmalloc", "percpu", "shmem"}


def test_table_marks_reclaimable_caches(data):
    out = io.StringIO()
    RENDERERS["table"](data, out)
    dentry_row = next(line for line in out.getvalue().splitlines() if line.startswith("dentry"))
    assert "reclaimable" in dentry_row and "unreclaimable" not in dentry_row


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("500ms", 0.5), ("2m", 120), ("1.5", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_bad_duration_is_a_usage_error():
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration("soon")


@pytest.mark.parametrize("args, message", [
    (["--window", "fast"], "not a duration"),
    (["--window", "50ms"], "too short to measure"),
    (["--samples", "1"], "at least 2 samples"),
])
def test_bad_options_exit_with_usage_and_one_line(args, message, capsys):
    assert main(["triage", *args]) == EX_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_oom_check_alone_prints_only_the_oom_section(capsys):
    assert main(["triage", "--oom-check", "--format", "json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert list(parsed) == ["oom"]
