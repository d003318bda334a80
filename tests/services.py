"""Real services for the tests, each with its own folder and loopback ports, stopped by PID:
PostgreSQL, an MLflow tracking server on it, and Ray nodes started with `ray start`."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's ray and mlflow


def free_ports(count: int) -> list[int]:
    """Distinct ports that were free a moment ago."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_range(size: int) -> int:
    """The first of `size` consecutive free ports (Ray's worker port range)."""
    for base in range(20000 + secrets.randbelow(20000), 60000, size):
        probes = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                probes.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in probes:
                s.close()
    raise RuntimeError("no free port range")


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the service's process group, SIGKILL if it does not end."""
        if self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _spawn(name: str, command: list[str], log: Path, env: dict[str, str] | None = None, user: str | None = None) -> Service:
    handle = open(log, "ab")
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True, user=user
    )
    return Service(name, process, log, env or {})


def scaled(seconds: float) -> float:
    """A time limit stretched by the machine's load (load average per core, at least 1), or by
    PROVPT_TEST_TIMEOUT_SCALE: a busy machine starts services slowly, not never."""
    given = os.environ.get("PROVPT_TEST_TIMEOUT_SCALE")
    factor = float(given) if given else max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    return seconds * factor


def wait_for(check, what: str, service: Service | None = None, timeout: float = 90.0) -> None:
    """Poll `check` until it holds; `timeout` is scaled by the load (`scaled`). A failure names
    the service and shows its log's tail."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and service.process.poll() is not None:
            raise RuntimeError(f"{what}: the process ended:\n{service.tail()}")
        try:
            if check():
                return
        except (OSError, subprocess.SubprocessError):  # refused, or a probe that hung: not ready yet
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s\n{service.tail() if service else ''}")


def postgres_binaries() -> Path | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists():
            return folder
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def start_postgres(root: Path) -> tuple[Service, str, str]:
    """A PostgreSQL server on a loopback port with password auth and a database `mlflow`.
    Returns the service, a URI without the password, and the password (for PGPASSWORD)."""
    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql-15)")
    user = "postgres" if os.geteuid() == 0 else None  # the server refuses to run as root
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    secret = root / "pwfile"
    secret.write_text(password + "\n")
    data = root / "data"
    if user:
        shutil.chown(root, user)
        shutil.chown(secret, user)
    subprocess.run(
        [binaries / "initdb", "-D", data, "-U", "provpt", "--auth=scram-sha-256", f"--pwfile={secret}", "--no-sync"],
        check=True, capture_output=True, user=user,
    )
    secret.unlink()
    (port,) = free_ports(1)
    command = [
        binaries / "postgres", "-D", data, "-p", str(port), "-k", root,
        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
    ]
    service = _spawn("postgres", [str(c) for c in command], root / "postgres.log", user=user)
    env = {**os.environ, "PGPASSWORD": password}
    wait_for(
        lambda: subprocess.run(
            [binaries / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "provpt", "-d", "postgres", "-c", "select 1"],
            env=env, capture_output=True,
        ).returncode == 0,
        "postgres", service,
    )
    subprocess.run(
        [binaries / "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "provpt", "-d", "postgres", "-c", "create database mlflow"],
        env=env, check=True, capture_output=True,
    )
    return service, f"postgresql+psycopg2://provpt@127.0.0.1:{port}/mlflow", password


def start_mlflow(root: Path, backend_uri: str, password: str, port: int | None = None) -> tuple[Service, str]:
    """`mlflow server` on the PostgreSQL store, serving artifacts from `root/artifacts`, on
    127.0.0.1 (the password reaches libpq through PGPASSWORD, never a command line)."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1)[0]
    env = {**os.environ, "PGPASSWORD": password, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [
        str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
    ]
    service = _spawn("mlflow", command, root / "mlflow.log", env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, "mlflow server", service, 120)
    return service, url


@dataclass
class RayNode:
    service: Service
    temp_dir: Path
    node_manager_port: int
    gcs_address: str


def start_ray_node(temp_dir: Path, env: dict[str, str], head: RayNode | None = None, cpus: int = 1) -> tuple[RayNode, dict[str, int]]:
    """`ray start --block` on loopback with every port explicit: the head (with the dashboard
    on 127.0.0.1) when `head` is None, else a node joining it."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    names = ["node_manager", "object_manager", "metrics", "agent_listen", "agent_grpc", "runtime_env"]
    if head is None:
        names += ["gcs", "dashboard", "client"]
    ports = dict(zip(names, free_ports(len(names))))
    workers = free_range(40)
    command = [
        str(BIN / "ray"), "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
        f"--node-manager-port={ports['node_manager']}", f"--object-manager-port={ports['object_manager']}",
        f"--metrics-export-port={ports['metrics']}", f"--dashboard-agent-listen-port={ports['agent_listen']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}", f"--runtime-env-agent-port={ports['runtime_env']}",
        f"--min-worker-port={workers}", f"--max-worker-port={workers + 39}",
    ]
    if head is None:
        command += [
            "--head", f"--port={ports['gcs']}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports['dashboard']}", f"--ray-client-server-port={ports['client']}",
        ]
    else:
        command.append(f"--address={head.gcs_address}")
    service = _spawn("ray-head" if head is None else "ray-node", command, temp_dir.parent / f"{temp_dir.name}.log", env)
    gcs = f"127.0.0.1:{ports['gcs']}" if head is None else head.gcs_address
    return RayNode(service, temp_dir, ports["node_manager"], gcs), ports


def processes_using(folder: Path) -> list[int]:
    """PIDs of the processes holding files under `folder` (ours alone: never another Ray)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(t.startswith(str(folder)) for t in targets):
            found.append(int(entry.name))
    return found


def kill_processes_using(folder: Path) -> None:
    for pid in processes_using(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def raylet_pid(node_manager_port: int) -> int | None:
    """The raylet of the node started with this node manager port."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command and command[0].endswith(b"raylet") and f"--node_manager_port={node_manager_port}".encode() in command:
            return int(entry.name)
    return None


SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")


@dataclass
class SlurmCluster:
    """A one-node SLURM on loopback: its daemons (munged, slurmctld, slurmd) and the
    environment its client commands need (SLURM_CONF)."""

    services: list[Service]
    conf: Path
    env: dict[str, str]
    node: str

    def scontrol(self, *args: str) -> str:
        done = subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=scaled(30))
        return done.stdout + done.stderr

    def idle(self) -> bool:
        """The node is up and holds no job, none still completing (State=IDLE+COMPLETING)."""
        return "State=IDLE " in self.scontrol("show", "node", self.node)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def _slurm_conf(root: Path, node: str, munge_socket: Path, cpus: int) -> str:
    """The whole cluster in one file: every daemon's state, spool, pid and log under `root`,
    its ports free on loopback, no cgroups (a container has none to give) and no accounting."""
    ctld_port, slurmd_port = free_ports(2)
    return "\n".join([
        "ClusterName=provpt-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "MpiDefault=none",
        "ReturnToService=2",
        "KillWait=10",  # a cancelled job's processes get 10 s after SIGTERM, not 30: the test waits on it
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1024 State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def start_slurm(root: Path, cpus: int = 2) -> SlurmCluster:
    """munged with its own key and socket, then slurmctld and slurmd in the foreground (-D),
    all under `root` (keep it short: it holds unix sockets; every folder above it must be
    searchable by all, as munged checks). Stops what it started if one
    daemon does not come up."""
    root.mkdir(parents=True, exist_ok=True)
    # munged wants its socket's folders open to all clients and writable by no one else
    os.chmod(root, 0o755)
    for folder in ("munge", "state", "spool"):
        (root / folder).mkdir(mode=0o755, exist_ok=True)
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o600)
    socket_path = root / "munge" / "socket"
    node = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, node, socket_path, cpus))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: list[Service] = []
    try:
        munge = _spawn("munged", [
            "munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
            f"--pid-file={root / 'munge' / 'munged.pid'}", f"--seed-file={root / 'munge' / 'munged.seed'}",
            f"--log-file={root / 'munge' / 'munged.log'}",
        ], root / "munged.out")
        started.append(munge)
        wait_for(socket_path.exists, "munged", munge)
        ctld = _spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)], root / "slurmctld.out", env)
        started.append(ctld)
        wait_for(lambda: "UP" in _ping(env), "slurmctld", ctld)
        slurmd = _spawn("slurmd", ["slurmd", "-D", "-f", str(conf)], root / "slurmd.out", env)
        started.append(slurmd)
        cluster = SlurmCluster(started, conf, env, node)
        wait_for(cluster.idle, "slurmd (node idle)", slurmd)
        return cluster
    except BaseException:
        for service in reversed(started):
            service.stop()
        raise


def _ping(env: dict[str, str]) -> str:
    return subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=scaled(30)).stdout

