"""`helpline bench` at a small size, as a real command: it starts the service, the emulator and the
emulated callers and handlers itself, loses no call, and writes its figures as JSON and a PNG.
Timing targets are not asserted here (they depend on the machine); the benchmark reports them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from .processes import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

#: Small and quick: prompts twenty times faster than life, short talks, callers ringing in over 2 s.
SMALL = ["--callers", "10", "--handlers", "3", "--time-scale", "0.05", "--talk", "0.5,1", "--ramp", "2",
         "--book-every", "2", "--decision-calls", "300"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_bench(tmp_path: Path, *extra: str) -> dict[str, Any]:
    """Run `helpline bench` with SMALL plus `extra`; returns its JSON after checking the chart exists."""
    output = tmp_path / "results"
    result = run_cli(["bench", *SMALL, "--output", str(output), *extra], {}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "helpline bench - paced" in result.stdout and "\nmachine: " in result.stdout
    assert "\nwait estimate vs the wait that followed (" in result.stdout and "p90 error" in result.stdout
    assert "\nanswer to queue, call time (s): typed ahead p50 " in result.stdout and ", listened p50 " in result.stdout
    assert (output / "bench.png").read_bytes()[:8] == PNG_MAGIC
    return json.loads((output / "bench.json").read_text())


def check_figures(figures: dict[str, Any], processes: int) -> None:
    """No call lost, duplicated, unfinished or taken twice, and every step measured."""
    calls = figures["calls"]
    assert calls["placed"] == 10
    assert calls["ok"], calls
    assert calls["lost"] == calls["duplicated"] == calls["unfinished"] == calls["double_taken"] == 0
    latency = figures["latency_ms"]
    assert latency["ivr_webhook"]["n"] >= 10 and latency["ivr_webhook"]["p99"] is not None
    answered = calls["outcomes"].get("answered", 0)
    assert answered >= 1
    assert latency["queue_to_offer"]["n"] == answered
    assert latency["accept_to_redirect"]["n"] == answered
    # Every caller who waited was told a wait (Twilio asks the waitUrl as they join): each answered one is compared.
    told = figures["wait_estimate"]
    assert 1 <= told["n"] and told["median_abs_error_s"] is not None and told["p90_abs_error_s"] >= told["median_abs_error_s"]
    serving = [name for name in figures["peak_rss_mb"] if name.startswith("serve-")]
    assert len({name.split("/")[0] for name in serving}) == processes
    # With several processes, the one `helpline scheduler` is one of the service's and is judged too.
    assert ("scheduler/main" in figures["peak_rss_mb"]) == (processes > 1)
    assert set(figures["rss_under_load_mb"]) == set(figures["peak_rss_mb"])
    decision = figures["routing_decision"]
    assert decision["waiting"] == 300 and decision["ms_p50"] > 0
    # The first decisions (before the router's statements are prepared) are shown apart from the percentiles.
    assert len(decision["first_ms"]) == decision["first"] == 10 and all(one > 0 for one in decision["first_ms"])
    assert set(figures["verdicts"]) >= {"no_lost_or_duplicated_call", "ivr_webhook_p99_under_25ms"}
    box = figures["machine"]  # what the figures were measured on, to compare runs from different days
    assert box["cpu"] and box["cpus"] >= 1 and box["yardstick_ms"] > 0


def test_the_benchmark_runs_on_sqlite_and_loses_no_call(tmp_path):
    check_figures(run_bench(tmp_path), processes=1)


@pytest.mark.postgres
@pytest.mark.redis
def test_the_benchmark_runs_two_processes_on_postgresql_and_redis(tmp_path):
    postgres, redis_url = os.environ.get("HELPLINE_TEST_POSTGRES_URL"), os.environ.get("HELPLINE_TEST_REDIS_URL")
    if not postgres or not redis_url:
        pytest.skip("HELPLINE_TEST_POSTGRES_URL and HELPLINE_TEST_REDIS_URL are needed")
    figures = run_bench(tmp_path, "--database", "postgresql", "--postgres-url", postgres, "--redis", redis_url,
                        "--processes", "2")
    check_figures(figures, processes=2)
    assert "postgresql, 2 serving processes" in figures["setup"]


def test_the_saturated_mode_compares_the_helpline_with_a_bare_flask_app(tmp_path):
    output = tmp_path / "saturated"
    result = run_cli(["bench", "--mode", "saturated", "--duration", "2", "--decision-calls", "0", "--output", str(output)],
                     {}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads((output / "bench.json").read_text())["saturated"]
    assert figures["helpline_webhooks_per_s"] > 0 and figures["bare_flask_webhooks_per_s"] > 0
    assert figures["helpline_errors"] == 0 and figures["bare_flask_errors"] == 0
    assert figures["helpline_calls_recorded"] > 0
    # The worker's CPU for each webhook, for both apps, and the verdicts on them.
    assert 0 < figures["bare_flask_worker_cpu_ms_per_webhook"] < figures["helpline_worker_cpu_ms_per_webhook"]
    verdicts = json.loads((output / "bench.json").read_text())["verdicts"]
    assert {"saturated_throughput_at_least_half_the_bare_apps", "saturated_p99_within_5x_the_bare_apps",
            "worker_cpu_per_webhook_under_2ms"} <= {name for name, met in verdicts.items() if met is not None}
    assert "helpline_worker_cpu_ms_per_webhook" in result.stdout


def test_emulated_consoles_skip_the_pure_python_utf8_check():
    """websocket-client checks each message's UTF-8 in pure Python, byte by byte; the benchmark's
    fifty consoles would spend the CPU the service is being measured on (a browser does it natively)."""
    import random

    from helpline.bench.handlers import Handler, Pace

    handler = Handler("bench001", "password", "http://127.0.0.1:9", None, Pace(), random.Random(1))  # type: ignore[arg-type]
    assert handler.socket.eio.websocket_extra_options == {"skip_utf8_validation": True}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.skipif(os.environ.get("HELPLINE_TEST_DISRUPT") != "1",
                    reason="starts and kills a Redis of its own: set HELPLINE_TEST_DISRUPT=1")
def test_a_fault_run_kills_its_own_redis_and_leaves_no_caller_behind(tmp_path):
    """`--fault redis` on servers the run started itself: the calls all end and are recorded, none is
    held by Twilio unknown to the service, and every handler is back in service."""
    output = tmp_path / "fault"
    result = run_cli(["bench", "--fault", "redis", "--fault-at", "3", "--fault-for", "5", "--processes", "2",
                      "--callers", "12", "--handlers", "3", "--time-scale", "0.05", "--talk", "0.5,1", "--ramp", "8",
                      "--book-every", "0", "--decision-calls", "0", "--output", str(output)], {}, timeout=420)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fault redis (the run's own Redis killed)" in result.stdout
    figures = json.loads((output / "bench.json").read_text())
    fault = figures["fault"]
    assert fault["error"] is None and fault["began_s"] is not None and fault["ended_s"] is not None
    assert (fault["lost"], fault["unfinished"], fault["duplicated"], fault["held_unknown"], fault["still_going"]) == (0, 0, 0, 0, 0), fault
    assert fault["handlers_back_in_service"], fault
    assert fault["ok"] and figures["verdicts"]["fault_left_no_caller_behind"] is True
    assert figures["calls"]["placed"] == 12 and figures["calls"]["ok"]


def test_a_fault_run_refuses_the_machines_own_servers(tmp_path):
    result = run_cli(["bench", "--fault", "postgresql", "--redis", "redis://127.0.0.1:6379/0", "--output", str(tmp_path)], {})
    assert result.returncode != 0 and "of its own" in result.stderr
    result = run_cli(["bench", "--fault", "kill", "--output", str(tmp_path)], {})
    assert result.returncode != 0 and "--processes 2" in result.stderr


def test_answer_to_queue_is_told_apart_for_callers_who_type_ahead_and_callers_who_listen():
    from helpline.bench.paced import SCRIPTS, answer_to_queue, reaches_line, trace

    def events(*gathered: str, queued_at: float) -> list[dict[str, Any]]:
        at = "2026-01-01T00:00:00+00:00"
        found: list[dict[str, Any]] = [{"kind": "gather.ended", "digits": digits, "at": at} for digits in gathered]
        return found + [{"kind": "enqueued", "call_s": queued_at, "at": at}, {"kind": "gather.ended", "digits": "2", "at": at}]

    traces = [trace(events("111", queued_at=12.5), "CA1", None), trace(events("1", "1", "1", queued_at=80.0), "CA2", None),
              trace(events("1", "1", "4", "1", queued_at=140.0), "CA3", None)]  # a detour: neither
    # Put through to a handler before reaching <Enqueue>: in line from the service's reply to the keys.
    at = "2026-01-01T00:00:00+00:00"
    traces.append(trace([{"kind": "gather.ended", "digits": "111", "at": at},
                         {"kind": "webhook", "url": "http://x/voice/step/about_whom/keys", "at": at},
                         {"kind": "webhook.response", "call_s": 10.5, "at": at},
                         {"kind": "redirected", "by": "api", "call_s": 12.0, "at": at}], "CA4", None))
    figures = answer_to_queue(traces)
    assert (figures["typed_ahead"]["n"], figures["typed_ahead"]["p50"]) == (2, 11.5)
    assert (figures["listened"]["n"], figures["listened"]["p50"]) == (1, 80.0)
    assert reaches_line(("barge:111",)) and not reaches_line(("1", "2")) and any(keys == ("barge:111",) for _, keys in SCRIPTS)
