"""One word, one meaning: the renamed options and the replay command, and the old names that
keep working for one release with one note line (CHANGELOG 0.3)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

SAMPLE = "sample_traces/gpt3-125m-sim.parquet"


@pytest.fixture(autouse=True)
def _repo(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)


def _notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("moetrace: note:")]


@pytest.mark.parametrize("command,old,new,value", [
    ("analyze", "--window", "--state-window", "200"),
    ("predict", "--window", "--sw-window", "300"),
    ("plan", "--window", "--load-window", "300"),
    ("plan", "--interval", "--replan-interval", "500"),
    ("plan", "--from", "--estimate", "window"),
    ("plan", "--rebalance", "--planner", "eplb"),
])
def test_an_old_option_name_works_with_one_note_and_gives_the_same_result(command, old, new,
                                                                        value, tmp_path):
    extra = ["--gpus", "8"] if command == "plan" else []
    if command == "plan" and new != "--estimate":
        extra += ["--estimate", "window"]
    if command == "predict":
        extra += ["--predictors", "sw_avg", "--horizon", "100"]
    old_run = run_cli(command, SAMPLE, *extra, old, value, "--json")
    new_run = run_cli(command, SAMPLE, *extra, new, value, "--json")
    assert old_run.returncode == 0 == new_run.returncode, old_run.stderr + new_run.stderr
    assert _notes(old_run.stderr) == [f"moetrace: note: {old} is now {new}; the old name goes "
                                      "in the next release"]
    assert _notes(new_run.stderr) == []
    a, b = json.loads(old_run.stdout), json.loads(new_run.stdout)
    for doc in (a, b):
        doc.pop("created", None)
    assert a == b


def test_giving_an_option_under_both_names_is_a_usage_error():
    result = run_cli("analyze", SAMPLE, "--window", "200", "--state-window", "300")
    assert result.returncode == 2
    assert "--window is the old name of --state-window" in result.stderr
    assert "Usage: moetrace analyze" in result.stderr


def test_replay_is_a_command_and_plan_simulate_still_reaches_it(tmp_path):
    new = run_cli("replay", SAMPLE, "--gpus", "8", "--policies", "static,window", "--json")
    old = run_cli("plan", SAMPLE, "--gpus", "8", "--simulate", "--policies", "static,window",
                  "--json")
    assert new.returncode == 0 == old.returncode, new.stderr + old.stderr
    assert _notes(old.stderr) == ["moetrace: note: plan --simulate is now `moetrace replay`; "
                                  "the flag goes in the next release"]
    a, b = json.loads(new.stdout), json.loads(old.stdout)
    for doc in (a, b):
        doc.pop("seconds")
    assert a == b and a["schema"] == "moetrace.placement-replay"


def test_replay_options_are_not_plan_options():
    result = run_cli("plan", SAMPLE, "--gpus", "8", "--policies", "static")
    assert result.returncode == 2 and "--policies applies to `moetrace replay`" in result.stderr


@pytest.mark.parametrize("command", ["analyze", "predict", "report", "plan", "replay"])
def test_help_shows_the_new_names_only(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    text = result.stdout
    for hidden in ("--window ", "--interval ", "--from ", "--rebalance ", "--simulate "):
        assert hidden not in text
    expected = {"analyze": ["--state-window"], "predict": ["--sw-window"],
                "report": ["--sw-window", "--state-window"],
                "plan": ["--load-window", "--replan-interval", "--estimate", "--planner"],
                "replay": ["--load-window", "--replan-interval", "--planner", "--policies"]}
    for option in expected[command]:
        assert option in text
