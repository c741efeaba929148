"""The deployment files of docs/deploying.md (examples/deploy/), run as far as this machine allows.

There is no systemd as PID 1, no Docker engine and no cluster here, so each file is read the way
its runtime reads it and its commands are run as real processes, on the test's database
(``db_url``, its own table prefix):

- the systemd units (configparser, as systemd's key=value format): each ``ExecStart`` runs with
  the unit's ``Environment=`` and ``EnvironmentFile=`` (the file's documented variables, the URL
  swapped), in its ``WorkingDirectory`` (paths moved to a temporary directory); the nodes run
  jobs, and the unit's ``KillSignal`` stops each within ``TimeoutStopSec`` with exit status 0;
  a configuration error exits with a status of ``RestartPreventExitStatus``;
- the Dockerfile: its ``COPY`` lines build the image's working directory (from the Compose
  build context) that the containers' commands run in; its ``pip install`` names only extras
  pyproject.toml defines and resolves offline against what is installed; its ``CMD`` runs a node;
- compose.yaml (PyYAML): the node's and the web app's commands run, a request to the web app
  enqueues a job that the node runs, the node's health check (after Compose's ``$$``
  interpolation, under ``sh -c`` as ``CMD-SHELL`` does) passes while the node runs and when
  degraded, and fails when the installation is unhealthy or the check cannot run;
- kubernetes.yaml: the kinds and fields used; the init container run by every replica at once
  (on a fresh database and on a schema one version old; one that loses the race to add a column
  fails and is run again, as the kubelet does); two replicas of the node; the readiness probe's
  ``/healthz``; the liveness probe's command in each case docs/deploying.md describes (a stalled
  leader in this pod and in another, a schedule in error, the database down, a bad setting);
  SIGTERM stops each replica within ``terminationGracePeriodSeconds``.

The shell blocks of docs/deploying.md marked ``checked by tests/acceptance/test_deploy.py`` are
in :data:`DOC_COMMANDS`, each with what stands in for it here.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from linger_sched.config import Settings, resolve
from linger_sched.store import SCHEMA_VERSION, Store

from .helpers import Proc, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "examples" / "deploy"
BIN = Path(sys.executable).parent
CLI = str(BIN / "linger-sched")
APP = "examples.flask_app.tasks:jobs"  # the shop's Linger app, as the files name it

# The shell blocks of docs/deploying.md that this file checks: every command line, verbatim,
# and what the test does in its place (there is no systemd, Docker engine or cluster here).
DOC_COMMANDS = {
    # systemd
    "sudo cp examples/deploy/linger-sched.service examples/deploy/linger-sched-worker@.service /etc/systemd/system/":
        "read both units as systemd does (test_the_units_use_known_keys_and_values; systemd-analyze verify if installed)",
    "sudo systemctl daemon-reload": "the same reading",
    "sudo systemctl enable --now linger-sched.service linger-sched-worker@1.service":
        "start each ExecStart with the unit's environment in its WorkingDirectory (instance 1 of the template)",
    "journalctl -u linger-sched.service -f": "read the node's log (its stderr)",
    "sudo systemctl stop linger-sched.service linger-sched-worker@1.service":
        "send each unit's KillSignal, wait up to its TimeoutStopSec, check the exit status",
    # Docker Compose
    "docker compose -f examples/deploy/compose.yaml up --build -d":
        "build the image's working directory from the Dockerfile's COPY lines, start the web and node commands",
    "docker compose -f examples/deploy/compose.yaml exec node linger-sched status":
        "run `linger-sched status` with the node service's environment",
    "curl -X POST http://localhost:8000/signup/7": "POST /signup/7 to the web command's address",
    "docker compose -f examples/deploy/compose.yaml stop node": "SIGTERM to the node, wait up to stop_grace_period",
    "docker compose -f examples/deploy/compose.yaml build": "the image's working directory, built again",
    "docker compose -f examples/deploy/compose.yaml run --rm node linger-sched db upgrade":
        "run `linger-sched db upgrade` with the node service's environment",
    "docker compose -f examples/deploy/compose.yaml up -d": "start the node command again",
    # Kubernetes
    "kubectl apply -f examples/deploy/kubernetes.yaml":
        "read every document, run the init container of each replica at once, then the node of each replica",
    "kubectl rollout status deployment/shop-linger": "wait until every replica's readiness probe answers 200",
    "kubectl exec deployment/shop-linger -- linger-sched status": "run `linger-sched status` with the pod's environment",
}


# -- helpers ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """What a service manager gives a process before the unit's or container's own variables:
    a PATH (with the venv's bin first, as the image's /usr/local/bin) and a locale."""
    return {"PATH": f"{BIN}{os.pathsep}/usr/local/bin{os.pathsep}/usr/bin{os.pathsep}/bin", "LANG": "C.UTF-8"}


def swap_option(argv: Sequence[str], option: str, value: str) -> list[str]:
    """``argv`` with the value after ``option`` replaced (asserting the option is there)."""
    out = list(argv)
    i = out.index(option)
    out[i + 1] = value
    return out


def run(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def status_json(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    p = run([CLI, "status", "--json"], env, cwd)
    assert p.returncode == 0, p.stderr
    return dict(json.loads(p.stdout))


def live_nodes(env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    """The live nodes (none while the first node has not created the tables yet)."""
    p = run([CLI, "status", "--json"], env, cwd)
    if p.returncode == 1 and "are missing" in p.stderr:
        return []
    assert p.returncode == 0, p.stderr
    return [n for n in json.loads(p.stdout)["nodes"] if not n["lost"]]


def unreachable_url(db_url: str, tmp: Path) -> str:
    """A URL of the same kind whose database cannot be reached."""
    u = sa.make_url(db_url)
    if u.get_backend_name() == "sqlite":
        return f"sqlite:///{tmp / 'no-such-dir' / 'linger.db'}"
    return u.set(host="127.0.0.1", port=1).render_as_string(hide_password=False)


class Procs:
    """The processes a test started (killed, with their whole group, at the end)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path) -> Proc:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} (pid {p.pid}, {'running' if p.alive() else f'exit {p.popen.returncode}'}) "
                         f"=====\n{p.log()[-6000:]}" for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.alive():
                try:
                    os.killpg(p.pid, signal.SIGCONT)  # a frozen one too
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.popen.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


@pytest.fixture
def procs(db_url: str, prefix: str, tmp_path: Path) -> Iterator[Procs]:
    """Processes on ``db_url``/``prefix``; afterwards they are killed, then the tables dropped."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()
        store = Store(db_url, table_prefix=prefix)
        store.drop_schema()
        store.dispose()


def stop_within(proc: Proc, sig: int, limit: float, procs: Procs) -> tuple[int, float]:
    """Send ``sig`` and wait up to ``limit`` seconds: (exit status, seconds it took)."""
    sent = proc.signal(sig)
    code = proc.wait(limit)
    took = time.monotonic() - sent
    assert code is not None, f"{proc.name} still running {limit:g}s after signal {sig}:\n{procs.logs()}"
    return code, took


# -- the Dockerfile and the image's working directory ---------------------------------------------
def dockerfile_instructions(path: Path = DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def compose_file() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8")))


def build_context() -> Path:
    build = compose_file()["services"]["node"]["build"]
    return (DEPLOY / build["context"]).resolve()


def image_workdir(tmp: Path) -> Path:
    """The image's WORKDIR as the Dockerfile's COPY lines fill it from the Compose build context:
    the directory the containers' commands (and the units' WorkingDirectory) run in."""
    context = build_context()
    root = tmp / "image"
    workdir = root
    for instruction, args in dockerfile_instructions():
        if instruction == "WORKDIR":
            workdir = root / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            *sources, dest = shlex.split(args)
            assert not any(s.startswith("--") for s in sources), f"COPY {args}: options are not handled here"
            assert dest.endswith("/"), f"COPY {args}: a directory destination is expected"
            target = workdir / dest
            for src in sources:
                path = context / src
                assert path.exists(), f"COPY {src}: not in the build context {context}"
                if path.is_dir():  # its content goes into the destination
                    shutil.copytree(path, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.db", "instance"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target / path.name)
    return workdir


EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"])


def test_the_dockerfile_installs_real_extras_and_its_cmd_runs_a_node(tmp_path: Path) -> None:
    steps = dockerfile_instructions()
    kinds = [k for k, _ in steps]
    assert kinds[0] == "FROM"
    base = steps[0][1]
    m = re.fullmatch(r"python:(\d+)\.(\d+)(-slim)?", base)
    assert m, f"FROM {base}: a python image is expected"
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor.startswith(">=") and (int(m[1]), int(m[2])) >= tuple(int(x) for x in floor[2:].split(".")), (base, floor)

    installs = [shlex.split(args) for k, args in steps if k == "RUN" and args.startswith("pip install")]
    assert installs, "no RUN pip install line"
    for argv in installs:
        targets = [a for a in argv[2:] if not a.startswith("-")]
        ours = [t for t in targets if t.startswith("linger-sched")]
        assert ours, f"{argv}: linger-sched is not installed"
        for t in ours:
            extras = set(re.fullmatch(r"linger-sched\[([^\]]*)\]", t)[1].split(","))  # type: ignore[index]
            assert extras <= EXTRAS, f"{t}: pyproject.toml has no extra {sorted(extras - EXTRAS)}"
            assert {"postgres", "metrics"} <= extras  # the compose/kubernetes database, --metrics-port
        # resolvable from what is installed here: nothing downloaded, every requirement known
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", *targets],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"pip install {' '.join(targets)}:\n{p.stdout}{p.stderr}"

    # USER: numeric (runAsNonRoot can check it), created by an earlier RUN useradd
    (user,) = [args for k, args in steps if k == "USER"]
    assert user.isdigit() and user != "0"
    assert any(k == "RUN" and "useradd" in args and f"--uid {user}" in args
               for k, args in steps[:kinds.index("USER")]), "the USER's uid is not created before it"

    # CMD (JSON form) runs a node in the image's WORKDIR
    (cmd,) = [json.loads(args) for k, args in steps if k == "CMD"]
    assert cmd[:2] == ["linger-sched", "run"]
    workdir = image_workdir(tmp_path)
    assert (workdir / "examples" / "flask_app" / "tasks.py").is_file()
    env = dict(base_env(), LINGER_DATABASE_URL=f"sqlite:///{tmp_path / 'cmd.db'}")
    p = Procs(tmp_path)
    try:
        node = p.start("cmd", cmd, env, workdir)
        wait_for(lambda: len(live_nodes(env, workdir)) == 1 or not node.alive(), 30, 0.2, "the CMD's node")
        assert node.alive(), p.logs()
        code, _ = stop_within(node, signal.SIGTERM, 30, p)
        assert code == 0, p.logs()
    finally:
        p.close()


# -- systemd ---------------------------------------------------------------------------------------
UNITS = ["linger-sched.service", "linger-sched-worker@.service"]
KNOWN_UNIT_KEYS = {
    "Unit": {"Description", "Documentation", "Wants", "Requires", "After", "Before", "StartLimitIntervalSec",
             "StartLimitBurst"},
    "Service": {"Type", "User", "Group", "WorkingDirectory", "EnvironmentFile", "Environment", "ExecStart",
                "KillSignal", "KillMode", "TimeoutStopSec", "Restart", "RestartSec", "RestartPreventExitStatus",
                "SuccessExitStatus", "NoNewPrivileges", "PrivateTmp", "ProtectSystem", "ProtectHome", "ReadWritePaths"},
    "Install": {"WantedBy"},
}


def read_unit(name: str, instance: str | None = None) -> configparser.ConfigParser:
    """A unit file as systemd's key=value sections (``%i`` replaced by ``instance``)."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    if "@" in name:
        assert instance is not None, f"{name} is a template: give an instance"
        text = text.replace("%i", instance)
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"),
                                       inline_comment_prefixes=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    return parser


def documented_env_file() -> dict[str, str]:
    """The EnvironmentFile's variables as linger-sched.service's header documents them."""
    text = (DEPLOY / "linger-sched.service").read_text(encoding="utf-8")
    found = dict(re.findall(r"^#\s+(LINGER_[A-Z_]+)=(\S+)$", text, re.M))
    assert "LINGER_DATABASE_URL" in found, "the unit does not document its EnvironmentFile"
    return found


def seconds(value: str) -> float:
    """A systemd time span (``60``, ``60s``, ``1min 30s``) in seconds."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?", value):
        total += float(number) * {"ms": 0.001, "": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}[unit]
    return total


def unit_command(svc: configparser.SectionProxy, *, app_dir: Path, env_file: Path,
                 metrics_port: int | None = None) -> tuple[list[str], dict[str, str], Path]:
    """(argv, environment, working directory) of the unit's ExecStart, as systemd would start it,
    with /srv/shop moved to ``app_dir`` and the EnvironmentFile to ``env_file``: ``Environment=``
    first, then the file's variables, which win (systemd.exec)."""
    argv = shlex.split(svc["ExecStart"])
    assert argv[0] == "/srv/shop/.venv/bin/linger-sched", argv[0]
    argv[0] = CLI
    if metrics_port is not None:
        argv = swap_option(argv, "--metrics-port", str(metrics_port))
    env = base_env()
    for assignment in shlex.split(svc.get("Environment", "")):
        key, _, value = assignment.partition("=")
        env[key] = value
    assert svc["EnvironmentFile"] == "/etc/shop/linger.env"
    for line in env_file.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    assert svc["WorkingDirectory"] == "/srv/shop"
    return argv, env, app_dir


def test_the_units_use_known_keys_and_values() -> None:
    """Every key is one systemd knows (a typo would be ignored with a warning), and the stop
    timeout is longer than the node's grace."""
    for name in UNITS:
        unit = read_unit(name, "1")
        assert set(unit.sections()) == set(KNOWN_UNIT_KEYS), name
        for section, keys in KNOWN_UNIT_KEYS.items():
            unknown = set(unit[section]) - keys
            assert not unknown, f"{name} [{section}]: unknown keys {sorted(unknown)}"
        svc = unit["Service"]
        assert svc["Type"] in ("simple", "exec") and svc["User"] and svc["Group"]
        assert svc["Restart"] == "on-failure" and svc["KillMode"] in ("mixed", "control-group")
        assert svc["KillSignal"] in ("SIGTERM", "SIGINT")
        assert svc["RestartPreventExitStatus"].split() == ["2"]  # the CLI's usage/configuration errors
        for flag in ("NoNewPrivileges", "PrivateTmp"):
            assert svc[flag] in ("yes", "true"), flag
        env = dict(a.partition("=")[::2] for a in shlex.split(svc.get("Environment", "")))
        grace = resolve(env=env).shutdown_grace  # the unit's grace (else the default)
        assert grace == 30.0
        # the grace, the drain and the lease release: at least as much again as the grace
        assert seconds(svc["TimeoutStopSec"]) >= 2 * grace, (name, svc["TimeoutStopSec"], grace)
        assert "--wait-db" in shlex.split(svc["ExecStart"])
        assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "--no-scheduler" in read_unit("linger-sched-worker@.service", "1")["Service"]["ExecStart"].split()
    assert "%i" in (DEPLOY / "linger-sched-worker@.service").read_text()


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    """``systemd-analyze verify`` (it needs no running systemd) on the units, their ExecStart
    pointed at this venv: no unknown key, no bad value, an executable command."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (test_the_units_use_known_keys_and_values still ran)")
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/srv/shop/.venv/bin/linger-sched", CLI)
        (tmp_path / name).write_text(text)
    targets = [str(tmp_path / "linger-sched.service"), str(tmp_path / "linger-sched-worker@1.service")]
    p = subprocess.run([analyze, "verify", *targets], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(), p.stdout + p.stderr


def test_systemd_units_run_a_node_and_a_worker_and_stop_on_their_kill_signal(
    db_url: str, prefix: str, tmp_path: Path, procs: Procs,
) -> None:
    app_dir = image_workdir(tmp_path)  # /srv/shop: the shop's code
    env_file = tmp_path / "linger.env"
    variables = dict(documented_env_file(), LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    port = free_port()

    # sudo systemctl enable --now linger-sched.service linger-sched-worker@1.service
    started = {}
    for name, instance in (("linger-sched.service", None), ("linger-sched-worker@.service", "1")):
        unit = read_unit(name, instance)
        svc = unit["Service"]
        argv, env, cwd = unit_command(svc, app_dir=app_dir, env_file=env_file,
                                      metrics_port=port if "--metrics-port" in svc["ExecStart"] else None)
        assert env["LINGER_CONCURRENCY"] == "8" and env["LINGER_SHUTDOWN_GRACE"] == "30s"
        started[name] = (procs.start(name, argv, env, cwd), svc, env)
    _, _, env = started["linger-sched.service"]

    nodes = wait_for(lambda: (n := live_nodes(env, app_dir)) and len(n) == 2 and n, 30, 0.2, "the two nodes")
    assert sorted(n["roles"] for n in nodes) == ["scheduler,worker", "worker"], nodes
    assert status_json(env, app_dir)["leader"]["valid"]

    # they run the shop's jobs (enqueued as the web app would, from the CLI here)
    ids = []
    for user in range(3):
        p = run([CLI, "enqueue", "shop.send_welcome", "--args", f"[{user}]", "--app", APP], env, app_dir)
        assert p.returncode == 0, p.stderr
        ids.append(int(p.stdout.strip()))
    store = Store(db_url, table_prefix=prefix)
    try:
        wait_for(lambda: all(store.get_job(i).state == "succeeded" for i in ids), 30, 0.2, "the jobs")
    finally:
        store.dispose()

    # --metrics-port on 127.0.0.1
    code, body = get(f"http://127.0.0.1:{port}/healthz")
    assert code == 200 and json.loads(body)["status"] in ("healthy", "degraded"), body
    code, body = get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200 and b"linger_build_info" in body

    # journalctl -u linger-sched.service -f: the node's own lines (text format under systemd)
    proc, _, _ = started["linger-sched.service"]
    assert re.search(r"node \S+ started \(scheduler,worker\)", proc.log()), proc.log()

    # sudo systemctl stop ...: KillSignal, then up to TimeoutStopSec
    for name, (proc, svc, _) in started.items():
        code, took = stop_within(proc, signal.Signals[svc["KillSignal"]], seconds(svc["TimeoutStopSec"]), procs)
        assert code == 0, f"{name} exited {code} (systemd counts only 0 as a clean exit here):\n{procs.logs()}"
        assert took < seconds(svc["TimeoutStopSec"])
    assert live_nodes(env, app_dir) == []

    # a configuration error exits 2, which RestartPreventExitStatus keeps systemd from restarting
    svc = read_unit("linger-sched.service")["Service"]
    argv, env, cwd = unit_command(svc, app_dir=app_dir, env_file=env_file, metrics_port=free_port())
    p = run(argv, dict(env, LINGER_CONCURRENCY="0"), cwd)
    assert str(p.returncode) in svc["RestartPreventExitStatus"].split(), (p.returncode, p.stderr)
    assert "LINGER_CONCURRENCY" in p.stderr


# -- Docker Compose --------------------------------------------------------------------------------
def interpolate(text: str) -> str:
    """Compose's variable interpolation, for a value that uses none but ``$$`` (a literal ``$``)."""
    assert not re.search(r"\$(?!\$)[{A-Za-z_]", text.replace("$$", "")), f"uses a Compose variable: {text!r}"
    return text.replace("$$", "$")


def service_env(service: dict[str, Any], db_url: str, prefix: str) -> dict[str, str]:
    env = base_env()
    env.update({k: str(v) for k, v in service.get("environment", {}).items()})
    assert env["LINGER_DATABASE_URL"].startswith("postgresql://")
    env.update(LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix)
    return env


def test_compose_file_shape() -> None:
    compose = compose_file()
    services = compose["services"]
    assert set(services) == {"db", "web", "node"}
    grace = resolve(env={k: str(v) for k, v in services["node"]["environment"].items()}).shutdown_grace
    for name in ("web", "node"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert services[name]["depends_on"] == ["db"]
    node = services["node"]
    assert node["command"][:2] == ["linger-sched", "run"] and "--wait-db" in node["command"]
    assert seconds(node["stop_grace_period"]) >= 2 * grace
    test = node["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and len(test) == 2
    assert seconds(node["healthcheck"]["timeout"]) < seconds(node["healthcheck"]["interval"])
    assert "pgdata" in compose["volumes"]
    assert services["web"]["environment"]["FLASK_LINGER_RUN_NODE"] == "false"


@pytest.mark.slow
def test_compose_node_web_and_healthcheck(db_url: str, prefix: str, tmp_path: Path, procs: Procs) -> None:
    services = compose_file()["services"]
    workdir = image_workdir(tmp_path)
    node_svc, web_svc = services["node"], services["web"]
    node_env = service_env(node_svc, db_url, prefix)
    web_env = service_env(web_svc, db_url, prefix)
    healthcheck = ["/bin/sh", "-c", interpolate(node_svc["healthcheck"]["test"][1])]

    def health(**extra: str) -> tuple[int, int]:
        """(linger-sched health's exit status, the health check's), with ``extra`` variables."""
        env = dict(node_env, **extra)
        return run([CLI, "health"], env, workdir).returncode, run(healthcheck, env, workdir).returncode

    # docker compose ... up --build -d: the node (its metrics port moved to a free one: it is not
    # published, and 9100 may be in use here) and the web app on the published port's address
    node_cmd = swap_option(node_svc["command"], "--metrics-port", str(free_port()))
    node = procs.start("node", node_cmd, node_env, workdir)
    web_port = free_port()
    published, _, target = web_svc["ports"][0].partition(":")
    web_cmd = swap_option(web_svc["command"], "--bind", f"127.0.0.1:{web_port}")
    assert web_svc["command"][web_svc["command"].index("--bind") + 1] == f"0.0.0.0:{target}" and published == target
    web = procs.start("web", web_cmd, web_env, workdir)
    wait_for(lambda: len(live_nodes(node_env, workdir)) == 1 or not node.alive(), 60, 0.2, "the node")
    assert node.alive(), procs.logs()

    # docker compose ... exec node linger-sched status
    p = run([CLI, "status"], node_env, workdir)
    assert p.returncode == 0 and "nodes: 1" in p.stdout, p.stdout + p.stderr

    # curl -X POST http://localhost:8000/signup/7: the web app enqueues, the node runs it
    def signup() -> tuple[int, bytes] | None:
        try:
            return post(f"http://127.0.0.1:{web_port}/signup/7")
        except OSError:
            return None if web.alive() else (0, b"web exited")
    code, body = wait_for(signup, 30, 0.2, "the web app")
    assert code == 202, (body, procs.logs())
    job_id = json.loads(body)["job"]
    wait_for(lambda: json.loads(get(f"http://127.0.0.1:{web_port}/jobs/{job_id}")[1])["state"] == "succeeded", 30, 0.2,
             "the job enqueued by the web app")
    assert "welcome mail to user 7 sent" in node.log()
    assert len(live_nodes(node_env, workdir)) == 1  # the web app runs no node of its own

    # --log-format json: stderr holds JSON objects only
    for line in node.log().splitlines():
        if line.strip():
            assert isinstance(json.loads(line), dict), line

    # the health check: healthy while the node runs
    assert health() == (0, 0), procs.logs()

    # docker compose ... stop node: SIGTERM, then up to stop_grace_period
    code, _ = stop_within(node, signal.SIGTERM, seconds(node_svc["stop_grace_period"]), procs)
    assert code == 0, procs.logs()
    stopped = time.monotonic()
    # just stopped: degraded (no live node; the lease was released) -> still healthy for Docker
    assert health() == (1, 0)
    # unhealthy once the schedules have had no leader for the misfire threshold (1 s here, to
    # see it now rather than 32 s later) -> unhealthy for Docker
    time.sleep(max(0.0, 1.5 - (time.monotonic() - stopped)))
    assert health(LINGER_MISFIRE_THRESHOLD="1s") == (2, 1)
    # the database cannot be reached: unhealthy; the check cannot run (a bad setting): unhealthy
    assert health(LINGER_DATABASE_URL=unreachable_url(db_url, tmp_path)) == (2, 1)
    assert health(LINGER_HEALTH_MAX_FAILURE_RATE="2") == (3, 1)

    # the schema upgrade: build, stop node (done), run --rm node linger-sched db upgrade, up -d
    p = run(["linger-sched", "db", "upgrade"], node_env, workdir)
    assert p.returncode == 0 and f"schema already up to date (version {SCHEMA_VERSION})" in p.stdout, p.stdout + p.stderr
    assert f"(prefix {prefix})" in p.stdout
    node = procs.start("node-again", node_cmd, node_env, workdir)
    wait_for(lambda: len(live_nodes(node_env, workdir)) == 1 or not node.alive(), 60, 0.2, "the node, started again")
    assert node.alive(), procs.logs()
    for proc in (node, web):
        code, _ = stop_within(proc, signal.SIGTERM, seconds(node_svc["stop_grace_period"]), procs)
        assert code == 0, procs.logs()


# -- Kubernetes ------------------------------------------------------------------------------------
KNOWN_K8S_KEYS = {
    "deployment.spec": {"replicas", "strategy", "selector", "template", "minReadySeconds", "revisionHistoryLimit",
                        "progressDeadlineSeconds"},
    "pod.spec": {"terminationGracePeriodSeconds", "securityContext", "initContainers", "containers", "volumes",
                 "serviceAccountName", "affinity", "topologySpreadConstraints"},
    "container": {"name", "image", "command", "args", "envFrom", "env", "ports", "readinessProbe", "livenessProbe",
                  "startupProbe", "resources", "securityContext", "imagePullPolicy", "workingDir", "volumeMounts"},
    "probe": {"exec", "httpGet", "tcpSocket", "grpc", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
              "failureThreshold", "successThreshold", "terminationGracePeriodSeconds"},
}


def k8s_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text(encoding="utf-8")) if d]
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [("v1", "Secret"), ("apps/v1", "Deployment")]
    return docs[0], docs[1]


def pod_env(container: dict[str, Any], secret: dict[str, Any], db_url: str, prefix: str) -> dict[str, str]:
    """The container's environment: its envFrom Secret (the URL swapped for the test's), then env."""
    env = base_env()
    for source in container.get("envFrom", []):
        assert source["secretRef"]["name"] == secret["metadata"]["name"]
        env.update({k: str(v) for k, v in secret["stringData"].items()})
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"])
    assert "LINGER_DATABASE_URL" in env and "LINGER_DATABASE_URL" not in {i["name"] for i in container.get("env", [])}
    env.update(LINGER_DATABASE_URL=db_url, LINGER_TABLE_PREFIX=prefix)
    return env


def test_kubernetes_manifest_shape() -> None:
    secret, dep = k8s_documents()
    assert secret["type"] == "Opaque" and set(secret["stringData"]) == {"LINGER_DATABASE_URL"}
    spec = dep["spec"]
    assert set(spec) <= KNOWN_K8S_KEYS["deployment.spec"]
    assert spec["replicas"] >= 2 and spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    assert set(pod) <= KNOWN_K8S_KEYS["pod.spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True}
    (init,) = pod["initContainers"]
    (node,) = pod["containers"]
    for c in (init, node):
        assert set(c) <= KNOWN_K8S_KEYS["container"], set(c) - KNOWN_K8S_KEYS["container"]
        assert c["image"] == node["image"]
    assert init["command"] == ["linger-sched", "db", "upgrade"]
    env = {i["name"]: i["value"] for i in node["env"]}
    grace = resolve(env=env).shutdown_grace
    assert pod["terminationGracePeriodSeconds"] >= 2 * grace
    assert "preStop" not in json.dumps(dep)
    # the readiness probe reaches the metrics server: all interfaces, the named port's number
    cmd = node["command"]
    assert cmd[cmd.index("--metrics-host") + 1] == "0.0.0.0"
    (port,) = node["ports"]
    assert int(cmd[cmd.index("--metrics-port") + 1]) == port["containerPort"]
    ready, alive = node["readinessProbe"], node["livenessProbe"]
    for probe in (ready, alive):
        assert set(probe) <= KNOWN_K8S_KEYS["probe"], set(probe) - KNOWN_K8S_KEYS["probe"]
    assert ready["httpGet"] == {"path": "/healthz", "port": port["name"]}
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    # liveness: slower than a fail-over (lease TTL) by far, a timeout below the period
    lease_ttl = Settings().lease_ttl
    assert alive["periodSeconds"] * alive["failureThreshold"] >= 4 * lease_ttl
    assert alive["timeoutSeconds"] < alive["periodSeconds"]
    assert alive["exec"]["command"][:2] == ["python", "-c"]
    compile(alive["exec"]["command"][2], "livenessProbe", "exec")


def make_version_5(store: Store) -> None:
    """The installed schema back to version 5, which lacked ``jobs.trace_context`` (as
    tests/integration/test_migration.py does): what a release that adds a column meets."""
    j = store.t.jobs
    with store.engine.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"ALTER TABLE {quote(j.name)} DROP COLUMN {quote('trace_context')}")
        conn.execute(sa.update(store.t.meta).where(store.t.meta.c.key == "schema_version").values(value="5"))


def run_at_once(argvs: Sequence[Sequence[str]], env: dict[str, str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    results: list[subprocess.CompletedProcess[str]] = []
    barrier = threading.Barrier(len(argvs))

    def one(argv: Sequence[str]) -> None:
        barrier.wait()
        results.append(run(argv, env, cwd))

    threads = [threading.Thread(target=one, args=(a,)) for a in argvs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


@pytest.mark.slow
def test_kubernetes_init_container_replicas_and_probes(db_url: str, prefix: str, tmp_path: Path, procs: Procs) -> None:
    secret, dep = k8s_documents()
    pod = dep["spec"]["template"]["spec"]
    replicas = dep["spec"]["replicas"]
    (init,) = pod["initContainers"]
    (container,) = pod["containers"]
    workdir = image_workdir(tmp_path)
    env = pod_env(container, secret, db_url, prefix)
    init_env = pod_env(init, secret, db_url, prefix)
    liveness = container["livenessProbe"]["exec"]["command"]
    ready_path = container["readinessProbe"]["httpGet"]["path"]

    def init_containers() -> list[str]:
        """Every replica's init container at once: each succeeds (an upgrade step that a peer's
        same change beat reads the catalog again and finds nothing left to do)."""
        results = run_at_once([init["command"]] * replicas, init_env, workdir)
        for r in results:
            assert r.returncode == 0, r.stdout + r.stderr
        return [r.stdout for r in results]

    # kubectl apply: every replica's init container at once, on an empty database ...
    outputs = init_containers()
    assert any("no tables were there" in out for out in outputs), outputs
    store = Store(db_url, table_prefix=prefix)
    try:
        store.check_schema()
        # ... and on a schema one version old (a release that adds a column)
        make_version_5(store)
        outputs = init_containers()
        assert any("schema upgraded from version 5" in out for out in outputs), outputs
        store.check_schema()
    finally:
        store.dispose()

    # ... then each replica's node; the misfire threshold is 2 s here (32 s by default) so that a
    # stalled scheduler is seen in seconds
    env["LINGER_MISFIRE_THRESHOLD"] = "2s"
    ports = [free_port() for _ in range(replicas)]
    nodes = [procs.start(f"pod-{i}", swap_option(container["command"], "--metrics-port", str(port)), env, workdir)
             for i, port in enumerate(ports)]
    wait_for(lambda: len(live_nodes(env, workdir)) == replicas or not all(n.alive() for n in nodes), 60, 0.2,
             "every replica's node")
    assert all(n.alive() for n in nodes), procs.logs()

    # kubectl rollout status: every replica ready (readiness probe: 200)
    def ready(port: int) -> int:
        try:
            return get(f"http://127.0.0.1:{port}{ready_path}")[0]
        except OSError:
            return 0
    wait_for(lambda: all(ready(p) == 200 for p in ports), 30, 0.2, "every replica ready")

    # kubectl exec deployment/shop-linger -- linger-sched status
    p = run(["linger-sched", "status"], env, workdir)
    assert p.returncode == 0 and f"nodes: {replicas}" in p.stdout, p.stdout + p.stderr

    def liveness_probe(*, other_pod: bool = False, **extra: str) -> int:
        """The probe's exit status in this pod (this machine's host name, which every node here
        has) or in another (a host name no node has: sitecustomize patches it)."""
        probe_env = dict(env, **extra)
        if other_pod:
            site = tmp_path / "other-pod"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text("import socket\nsocket.gethostname = lambda: 'shop-linger-other'\n")
            probe_env["PYTHONPATH"] = str(site)
        return run(liveness, probe_env, workdir).returncode

    def health_status(**extra: str) -> int:
        return run(["linger-sched", "health"], dict(env, **extra), workdir).returncode

    assert health_status() in (0, 1) and liveness_probe() == 0

    def add_schedule(name: str) -> None:
        """A runtime schedule every second, and wait for one of its jobs to have run."""
        p = run(["linger-sched", "schedules", "add", name, "--task", "shop.send_welcome", "--every", "1s",
                 "--args", "[0]", "--app", APP], env, workdir)
        assert p.returncode == 0, p.stderr
        wait_for(lambda: store.list_jobs("succeeded", 1, schedule_name=name), 30, 0.2, f"a job of {name} that ran")

    store = Store(db_url, table_prefix=prefix)
    try:
        # a schedule in error (its planning failed; retried in an hour) while the leader, in this
        # pod, is fine: unhealthy, but a restart would not fix it, so the probe passes
        add_schedule("tick")
        holder = store.get_lease("leader").holder  # type: ignore[union-attr]
        assert holder.startswith(socket.gethostname() + ":")

        def mark_error() -> bool:
            row = store.get_schedule("tick")
            assert row.next_run_at is not None
            return store.mark_schedule_error("tick", "ValueError: boom", expected=row.next_run_at,
                                             retry_at=row.next_run_at + timedelta(hours=1))
        wait_for(mark_error, 10, 0.1, "the schedule marked in error")
        wait_for(lambda: health_status() == 2, 30, 0.5, "unhealthy: a schedule in error")
        assert store.get_lease("leader").holder == holder  # type: ignore[union-attr]
        assert liveness_probe() == 0
        p = run(["linger-sched", "schedules", "remove", "tick"], env, workdir)
        assert p.returncode == 0, p.stderr
        wait_for(lambda: health_status() in (0, 1), 30, 0.5, "healthy again without the schedule in error")

        # freeze the leader: the schedules stall while its lease (30 s) is still valid
        add_schedule("beat")
        holder = store.get_lease("leader").holder  # type: ignore[union-attr]
        leader = next(n for n in nodes if n.pid == int(holder.rsplit(":", 2)[1]))
        other_port = next(port for n, port in zip(nodes, ports) if n is not leader)
        leader.signal(signal.SIGSTOP)
        try:  # only reads while it is frozen (a frozen SQLite writer would hold the write lock)
            wait_for(lambda: health_status() == 2, 30, 0.5, "unhealthy: the schedules stall")
            # the pod whose node leads fails its liveness probe; another pod does not
            assert liveness_probe() == 1, procs.logs()
            assert liveness_probe(other_pod=True) == 0
            # the other replica is not ready (503)
            assert ready(other_port) == 503
        finally:
            leader.signal(signal.SIGCONT)
        # the leader ticks again and catches up
        wait_for(lambda: health_status() in (0, 1), 30, 0.5, "healthy again after SIGCONT")
        assert liveness_probe() == 0
    finally:
        store.dispose()

    # the database cannot be read, or the check cannot run: alive (a restart fixes neither)
    down = unreachable_url(db_url, tmp_path)
    assert health_status(LINGER_DATABASE_URL=down) == 2 and liveness_probe(LINGER_DATABASE_URL=down) == 0
    assert health_status(LINGER_HEALTH_MAX_FAILURE_RATE="2") == 3
    assert liveness_probe(LINGER_HEALTH_MAX_FAILURE_RATE="2") == 0

    # a rollout or scale-down: SIGTERM, then up to terminationGracePeriodSeconds
    for n in nodes:
        code, _ = stop_within(n, signal.SIGTERM, pod["terminationGracePeriodSeconds"], procs)
        assert code == 0, procs.logs()
    assert live_nodes(env, workdir) == []


# -- the docs page ---------------------------------------------------------------------------------
def test_the_checked_blocks_of_the_page_are_the_commands_run_here() -> None:
    """Every command line of docs/deploying.md's blocks marked as checked here is in
    :data:`DOC_COMMANDS` (with what this file runs in its place), and nothing else is."""
    text = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    marker = "<!-- sh: checked by tests/acceptance/test_deploy.py -->\n```sh\n"
    blocks = [part.split("```", 1)[0] for part in text.split(marker)[1:]]
    assert len(blocks) == 4
    lines = [line.strip() for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]
    assert list(dict.fromkeys(lines)) == list(DOC_COMMANDS)
    for name in ("linger-sched.service", "linger-sched-worker@.service", "Dockerfile", "compose.yaml", "kubernetes.yaml"):
        assert f"<!-- example: examples/deploy/{name} -->" in text, name
