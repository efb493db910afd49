"""Recipe: PostgreSQL backups with barman-cloud (the tool CloudNativePG
runs), through the proxy, against Garage (real multipart rules: barman
uploads the base backup as a multipart upload with parallel parts).

One throwaway cluster archives its WAL with barman-cloud-wal-archive as its
archive_command; barman-cloud-backup takes base backups;
barman-cloud-restore plus barman-cloud-wal-restore (the restore_command)
bring a new cluster back to a point in time, which is queried and compared
with the source; barman-cloud-backup-delete applies a retention policy. What
is stored is read back with the proxy's upstream credentials: every object
is an envelope and no marker written into the database appears at rest.
docs/recipes/barman-cloud.md is the recipe."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import stack as stack_mod
from attack_helpers import stored
from recipes import assert_all_ciphertext, run, tool, workload_env

PG_BIN = Path(os.environ.get("CLOUDTASER_PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVER = "pg-main"
# Enough segments to make the archive a stream rather than a handful of
# files, few enough that one python start per segment (barman-cloud-wal-archive
# is run once per segment) stays well under a minute.
WAL_SWITCHES = 40


def pg(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        pytest.fail(f"PostgreSQL is not installed at {PG_BIN}: run scripts/install-deps.sh")
    return str(path)


class Cluster:
    """A PostgreSQL cluster in its own directory, run by the postgres user
    (PostgreSQL refuses to run as root), on its own port, reached over TCP."""

    def __init__(self, root: Path, name: str):
        self.data = root / name
        self.port = stack_mod.free_port()
        self.log = root / f"{name}.log"

    def ctl(self, *args: str, env: dict | None = None) -> str:
        return run([pg("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", *args],
                   env=env, user="postgres")

    def sql(self, query: str) -> str:
        out = run([pg("psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", "postgres", "-d", "postgres", "-c", query], user="postgres")
        return out.strip()

    def configure(self, **settings: str) -> None:
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in settings.items():
                f.write(f"{k} = '{v}'\n")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", pg("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60)


@pytest.fixture()
def pg_root():
    # Not tmp_path: pytest's base temp dir is private to root, and the
    # postgres user must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="ct-barman-"))
    root.chmod(0o755)
    shutil.chown(root, "postgres", "postgres")
    clusters: list[Cluster] = []
    yield root, clusters
    for c in clusters:
        c.stop()
    shutil.rmtree(root, ignore_errors=True)


def barman_args(endpoint: str, bucket: str) -> list[str]:
    return ["--endpoint-url", endpoint, "--addressing-style", "path", f"s3://{bucket}/pg", SERVER]


def shell_env(env: dict) -> str:
    """The workload credentials as a prefix for archive/restore commands,
    which PostgreSQL runs through the shell with its own environment."""
    keep = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")
    return " ".join(f"{k}={env[k]}" for k in keep)


def wait_archived(c: Cluster, timeout: float = 120) -> str:
    """Switches to a new segment and waits until the one before is archived."""
    segment = c.sql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        archived, failed = c.sql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver").split("|")
        if archived >= segment:
            return segment
        time.sleep(0.3)
    raise AssertionError(f"{segment} not archived (last {archived!r}, {failed} failures): {c.log.read_text()[-3000:]}")


def backup_list(env: dict, args: list[str]) -> list[dict]:
    out = run([tool("barman-cloud-backup-list"), "--format", "json", *args], env=env)
    return json.loads(out)["backups_list"]


def test_barman_cloud_archive_backup_point_in_time_restore_and_retention(garage_stack, pg_root):
    root, clusters = pg_root
    bucket = f"recipe-barman-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    env = workload_env()
    args = barman_args(garage_stack.proxy_endpoint, bucket)
    # Markers written into table rows: they are in the WAL and in the base
    # backup's data files, and must not appear in anything stored.
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}"

    src = Cluster(root, "source")
    clusters.append(src)
    run([pg("initdb"), "-D", str(src.data), "-U", "postgres", "--auth=trust", "--wal-segsize=1", "-E", "UTF8",
         "--no-instructions"], user="postgres")
    archive = f"{shell_env(env)} {tool('barman-cloud-wal-archive')} --gzip {' '.join(args)} %p"
    src.configure(
        port=str(src.port), listen_addresses="127.0.0.1", unix_socket_directories=str(root),
        archive_mode="on", archive_command=archive, fsync="off", wal_level="replica",
    )
    src.ctl("start")
    src.sql(f"CREATE TABLE t (id serial PRIMARY KEY, batch text, payload text);"
            f"INSERT INTO t (batch, payload) SELECT 'A', '{marker}-' || g FROM generate_series(1, 2000) g")
    for i in range(WAL_SWITCHES // 2):
        src.sql(f"INSERT INTO t (batch, payload) VALUES ('A', '{marker}-a{i}'); SELECT pg_switch_wal()")
    wait_archived(src)

    # The base backup: a multipart upload in parts of at least 5 MiB,
    # uncompressed so a marker in a data file would show at rest.
    run([tool("barman-cloud-backup"), "-h", "127.0.0.1", "-p", str(src.port), "-U", "postgres",
         "--immediate-checkpoint", "-J", "2", "--min-chunk-size", str(5 << 20), "-n", "base-one", *args], env=env)
    first = backup_list(env, args)
    assert [(b["backup_name"], b["status"]) for b in first] == [("base-one", "DONE")], first
    first_id = first[0]["backup_id"]

    # After the backup: batch B, then the point in time, then batch C.
    for i in range(WAL_SWITCHES // 2):
        src.sql(f"INSERT INTO t (batch, payload) VALUES ('B', '{marker}-b{i}'); SELECT pg_switch_wal()")
    src.sql(f"INSERT INTO t (batch, payload) SELECT 'B', '{marker}-' || g FROM generate_series(1, 500) g")
    expected = src.sql("SELECT count(*), md5(string_agg(payload, ',' ORDER BY id)) FROM t")
    time.sleep(1.1)
    target = src.sql("SELECT now()")
    time.sleep(1.1)
    src.sql("INSERT INTO t (batch, payload) VALUES ('C', 'after the target')")
    last = wait_archived(src)
    archived = int(src.sql("SELECT archived_count FROM pg_stat_archiver"))
    assert archived >= WAL_SWITCHES, archived

    # Restore the first backup into a new directory, replay the archive to the target.
    dst = Cluster(root, "restored")
    clusters.append(dst)
    run([tool("barman-cloud-restore"), *args, first_id, str(dst.data)], env=env)
    shutil.chown(dst.data, "postgres", "postgres")
    subprocess.run(["chown", "-R", "postgres:postgres", str(dst.data)], check=True)
    restore = f"{shell_env(env)} {tool('barman-cloud-wal-restore')} {' '.join(args)} %f %p"
    dst.configure(
        port=str(dst.port), unix_socket_directories=str(root), archive_mode="off", restore_command=restore,
        recovery_target_time=target, recovery_target_action="promote",
    )
    (dst.data / "recovery.signal").touch()
    dst.ctl("start")
    deadline = time.monotonic() + 120
    while dst.sql("SELECT pg_is_in_recovery()") == "t":
        assert time.monotonic() < deadline, dst.log.read_text()[-3000:]
        time.sleep(0.3)
    assert dst.sql("SELECT count(*), md5(string_agg(payload, ',' ORDER BY id)) FROM t") == expected
    assert dst.sql("SELECT count(*) FROM t WHERE batch = 'C'") == "0"
    assert dst.sql("SELECT count(*) FROM t WHERE batch = 'B'") == str(WAL_SWITCHES // 2 + 500)
    log = dst.log.read_text()
    assert "recovery stopping before commit" in log and "archive recovery complete" in log, log[-3000:]
    dst.stop()

    # Retention: a second backup, then keep one. The first backup and the
    # WAL only it needed go; the second still lists and checks out.
    run([tool("barman-cloud-backup"), "-h", "127.0.0.1", "-p", str(src.port), "-U", "postgres",
         "--immediate-checkpoint", "-n", "base-two", *args], env=env)
    keys_before = set(assert_all_ciphertext(garage_stack.direct, bucket, marker.encode()))
    # Every segment was archived, compressed, as its own object.
    wals_before = [k for k in keys_before if "/wals/" in k and not k.endswith(".backup.gz")]
    assert len(wals_before) >= WAL_SWITCHES, len(wals_before)
    assert any(k.endswith(f"/{last}.gz") for k in wals_before), (last, sorted(wals_before)[-5:])
    run([tool("barman-cloud-backup-delete"), "--retention-policy", "REDUNDANCY 1", *args], env=env)
    after = backup_list(env, args)
    assert [(b["backup_name"], b["status"]) for b in after] == [("base-two", "DONE")], after
    keys_after = set(assert_all_ciphertext(garage_stack.direct, bucket, marker.encode()))
    gone = keys_before - keys_after
    assert any(f"/base/{first_id}/" in k for k in gone), sorted(gone)
    assert not any(f"/base/{first_id}/" in k for k in keys_after)
    # The WAL older than the kept backup went; what it needs stayed.
    begin = after[0]["begin_wal"]
    wals_after = sorted(k.rsplit("/", 1)[1] for k in keys_after if "/wals/" in k)
    assert wals_after and all(w >= begin for w in wals_after), (begin, wals_after)
    assert any(w.startswith(begin) for w in wals_after), (begin, wals_after)
    assert len(wals_after) < len(wals_before)

    # The base backups are multipart uploads (Garage enforces S3's part
    # rules), stored in the proxy's multipart format.
    tars = [k for k in keys_after if k.endswith("/data.tar")]
    assert tars, sorted(keys_after)
    _, meta = stored(garage_stack.direct, bucket, tars[0])
    assert meta.get("cloudtaser-layout") == "multipart", meta
    src.ctl("stop")
