"""What the driver prints while a study runs: the board's lines, each trial error once, and the
overall progress with an ETA (plain lines off a terminal, a bar on one)."""

from __future__ import annotations

import io

import pytest

from orchestrator.execution.progress import ProgressPrinter


def _counts(ended: int, running: int, failed: int = 0, total: int = 4, best: float | None = None) -> dict:
    return {"ended": ended, "running": running, "failed": failed, "total": total, "best_val": best}


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_count_every_planned_trial_and_give_an_eta():
    out = Pipe()
    printer = ProgressPrinter(planned=10, stream=out, every=0.0)
    printer.update({"a/vpt": {"phase": "search", "phases": {"search": _counts(0, 2)}}})
    first = out.getvalue()
    assert "[a/vpt] search: 0/4 done, 2 running, 0 failed" in first
    assert "progress: 0/10 trials ended, 2 running, 0 failed" in first and "ETA unknown (no trial has ended yet)" in first
    state = {
        "a/vpt": {"phase": "final", "phases": {"search": _counts(4, 0, failed=1, best=0.5), "final": _counts(1, 1, total=2)}},
        "b/vpt": {"phase": "search", "phases": {"search": _counts(2, 2)}, "errors": {"BackboneLoadError: x": 1}},
    }
    printer.update(state)
    printer.update(state)  # nothing changed: nothing printed again
    lines = out.getvalue()[len(first):].splitlines()
    assert sum("a trial failed: BackboneLoadError: x" in line for line in lines) == 1
    assert any("[a/vpt] final: 1/2 done, 1 running, 0 failed" in line for line in lines)
    overall = [line for line in lines if "progress:" in line]
    assert len(overall) == 1 and "progress: 7/10 trials ended, 3 running, 1 failed" in overall[0]
    eta = overall[0].split("ETA ")[1]
    assert eta.endswith(" min") and float(eta.split()[0]) >= 0  # 3 left at the rate 7 ended
    printer.close()


def test_a_resumed_study_estimates_from_the_trials_this_run_ended():
    out = Pipe()
    printer = ProgressPrinter(planned=8, stream=out, every=0.0)
    printer.update({"a/vpt": {"phase": "final", "phases": {"search": _counts(4, 0), "final": _counts(0, 2, total=4)}}})
    assert "ETA unknown (no trial has ended yet)" in out.getvalue()  # the 4 restored ones set no rate


def test_on_a_terminal_the_overall_progress_is_a_bar():
    out = Terminal()
    printer = ProgressPrinter(planned=5, stream=out)
    printer.update({"a/vpt": {"phase": "search", "phases": {"search": _counts(3, 1, total=5)}}})
    assert printer.bar is not None and printer.bar.n == 3
    printer.close()
    text = out.getvalue()
    assert "[a/vpt] search: 3/5 done" in text and "3/5" in text and "progress:" not in text


def test_the_exchange_counts_each_phase_and_names_each_error_cause_once():
    from concurrent.futures import Future

    from orchestrator.execution.exchange import Exchange, StudyAborted, TrialRequest
    from ray.tune.search import Searcher

    exchange = Exchange("counts-test")
    exchange.phase("a/vpt", "search", total=5, ended=1, failed=0, best=0.3)  # one ended in an earlier run
    futures: list[Future] = []
    for number, order in ((1, 1), (2, 0), (3, 1)):
        request = TrialRequest(f"s/a/vpt/search/trial{number}", "a/vpt", "search", {"optuna_trial": number}, None, order)
        futures.append(exchange.submit(request))
    assert exchange.next_request().key.endswith("trial2")  # the earlier pipeline's first, then in order asked
    assert exchange.next_request().key.endswith("trial1")
    assert exchange.next_request().key.endswith("trial3")
    for number in (1, 2, 3):
        exchange.started(f"s/a/vpt/search/trial{number}")
    exchange.result("s/a/vpt/search/trial1", {"val_acc": 0.6})
    exchange.ended("s/a/vpt/search/trial1", {"val_acc": 0.6})
    exchange.ended("s/a/vpt/search/trial2", {"val_acc": float("nan"), "failed": 1})
    assert exchange.snapshot()["a/vpt"]["phases"]["search"] == {"ended": 3, "running": 1, "failed": 1, "total": 5, "best_val": 0.6}
    exchange.ended("s/a/vpt/search/trial3", {}, error="Traceback ...\nValueError: bad lr")
    state = exchange.snapshot()["a/vpt"]
    assert state["errors"] == {"ValueError: bad lr": 1} and state["phases"]["search"]["failed"] == 2
    assert futures[0].result().metrics == {"val_acc": 0.6} and futures[2].result().error.endswith("bad lr")
    assert exchange.next_request() is None  # nothing waiting, more may come
    late = exchange.submit(TrialRequest("s/a/vpt/final/seed0", "a/vpt", "final", {"seed": 0}, None, 1))
    exchange.abort("stopped")
    with pytest.raises(StudyAborted, match="stopped"):
        late.result()
    assert exchange.next_request() == Searcher.FINISHED
