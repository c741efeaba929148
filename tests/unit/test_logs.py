"""Log records (issue 14): every ``log.*`` call in the package gives its record a stable
``action`` (checked on the source, so that a new call cannot forget it), and the JSON formatter
of ``--log-format json`` writes one object per line with the fixed keys and every extra one."""

from __future__ import annotations

import ast
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from linger_sched.logs import FORMATS, JsonFormatter, formatter

PACKAGE = Path(__file__).resolve().parents[2] / "linger_sched"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
# helpers that build a job record's extra (action, job_id, task, attempt): _about(job, "action")
EXTRA_HELPERS = {"_about"}


def log_calls(path: Path) -> list[tuple[int, ast.Call]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logger")):
            out.append((node.lineno, node))
    return out


def has_action(call: ast.Call) -> bool:
    extra = next((k.value for k in call.keywords if k.arg == "extra"), None)
    if isinstance(extra, ast.Dict):
        return any(isinstance(k, ast.Constant) and k.value == "action" for k in extra.keys)
    if isinstance(extra, ast.Call) and isinstance(extra.func, ast.Name) and extra.func.id in EXTRA_HELPERS:
        return len(extra.args) >= 2 and is_text(extra.args[1])
    return False


def is_text(node: ast.expr) -> bool:
    """A constant string, or a choice between two (``"failed" if final else "retry"``)."""
    if isinstance(node, ast.IfExp):
        return is_text(node.body) and is_text(node.orelse)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_log_call_gives_its_record_an_action(path: Path) -> None:
    missing = [f"line {line}: {ast.unparse(call)[:100]}" for line, call in log_calls(path) if not has_action(call)]
    assert not missing, f"{path.name}: log calls without extra={{'action': ...}}: {missing}"


def test_the_audit_finds_the_package_log_calls() -> None:
    assert sum(len(log_calls(p)) for p in PACKAGE.rglob("*.py")) > 60


def make_record(msg: str = "job %s %s succeeded in %.3fs (attempt %s)", args: tuple[object, ...] = (42, "billing.charge", 0.012, 1),
                exc_info: object = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("linger_sched.worker", logging.INFO, __file__, 10, msg, args, exc_info)  # type: ignore[arg-type]
    record.created = datetime(2026, 12, 2, 13, 20, 5, 112000, tzinfo=UTC).timestamp()
    for k, v in extra.items():
        setattr(record, k, v)
    return record


def test_json_lines_carry_the_fixed_keys_first_then_every_extra() -> None:
    record = make_record(action="succeeded", job_id=42, task="billing.charge", attempt=1, queue="money", duration=0.012,
                         when=datetime(2030, 1, 1, tzinfo=UTC), ids={3, 1}, thing=object())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert list(doc)[:8] == ["time", "level", "logger", "message", "action", "job_id", "task", "attempt"]
    assert doc["time"] == "2026-12-02T13:20:05.112+00:00"
    assert (doc["level"], doc["logger"]) == ("INFO", "linger_sched.worker")
    assert doc["message"] == "job 42 billing.charge succeeded in 0.012s (attempt 1)"
    assert (doc["action"], doc["job_id"], doc["task"], doc["attempt"]) == ("succeeded", 42, "billing.charge", 1)
    assert (doc["queue"], doc["duration"], doc["when"]) == ("money", 0.012, "2030-01-01T00:00:00+00:00")
    assert sorted(doc["ids"]) == [1, 3] and doc["thing"].startswith("<object object")
    assert not {"args", "msg", "levelno", "pathname", "exc_info"} & set(doc)


def test_json_lines_have_null_job_fields_and_the_traceback_as_text() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = make_record("tick failed", (), exc_info=sys.exc_info(), action="tick_error")
    doc = json.loads(JsonFormatter().format(record))
    assert (doc["action"], doc["job_id"], doc["task"], doc["attempt"]) == ("tick_error", None, None, None)
    assert doc["exc_info"].startswith("Traceback") and "ValueError: bad\nthing" in doc["exc_info"]


def test_formats_by_name() -> None:
    assert FORMATS == ("text", "json")
    assert isinstance(formatter("json"), JsonFormatter)
    text = formatter("text").format(make_record(action="succeeded"))
    assert text.endswith("INFO linger_sched.worker: job 42 billing.charge succeeded in 0.012s (attempt 1)")
    with pytest.raises(ValueError, match="unknown log format 'xml': use one of text, json"):
        formatter("xml")


def test_the_json_logging_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    from examples import json_logging

    logger = logging.getLogger("linger_sched")
    before = (logger.level, logger.propagate, list(logger.handlers))
    try:
        json_logging.setup()
        logging.getLogger("linger_sched.worker").info(
            "job %s %s succeeded in %.3fs (attempt %s)", 42, "billing.charge", 0.012, 1,
            extra={"action": "succeeded", "job_id": 42, "task": "billing.charge", "attempt": 1})
        logging.getLogger("linger_sched.worker").debug("not at INFO", extra={"action": "started"})
    finally:
        logger.handlers[:] = before[2]
        logger.setLevel(before[0])
        logger.propagate = before[1]
    (line,) = capsys.readouterr().err.splitlines()
    doc = json.loads(line)
    assert (doc["action"], doc["job_id"], doc["task"], doc["attempt"]) == ("succeeded", 42, "billing.charge", 1)
    assert doc["message"] == "job 42 billing.charge succeeded in 0.012s (attempt 1)"


def test_the_text_lines_are_the_classic_ones() -> None:
    from linger_sched.logs import TEXT_FORMAT, TextFormatter

    ours, classic = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    for created in (1_800_000_000.0, 1_800_000_000.5, 1_800_000_000.999, 1_800_000_001.25, 1_700_000_000.0):
        record = make_record(action="succeeded")
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == classic.format(record)
