"""What a killed local run leaves behind, and how the next run clears it.

TFX's LocalDagRunner records an execution in ML Metadata as RUNNING when a component starts and
publishes it (COMPLETE, with its output artifacts) when it ends. A run killed in between (SIGKILL, OOM,
a power cut) leaves that execution RUNNING forever, and the output folders it had started to write on
disk, unregistered. A rerun is not blocked by them (it starts new executions, and resolves inputs only
from published artifacts), but ML Metadata then claims that components of dead runs are still running,
and the partial folders take disk space and look like results.

So each local run holds an exclusive lock on its metadata store for as long as it runs (`exclusive_run`):
a second run over the same outputs is refused with a clear error instead of mixing its executions and
checkpoints with the first one's. Holding the lock, no other run of the pipeline can be alive, so every
execution still NEW or RUNNING belongs to a run that died: `cancel_interrupted` marks each CANCELED
(with a note saying why) and deletes its partial output folders.
"""

import contextlib
import errno
import fcntl
import glob
import logging
import os
import shutil
import time
from typing import Iterator, List

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
INTERRUPTED = "interrupted"
_ACTIVE = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)


class ConcurrentRunError(RuntimeError):
    """Another run of the pipeline is using the same metadata store."""


@contextlib.contextmanager
def exclusive_run(metadata_path: str) -> Iterator[None]:
    """Holds an exclusive lock beside the metadata store while the block runs; ConcurrentRunError if taken.

    The kernel drops the lock when the holding process dies, however it dies, so a killed run never
    leaves it behind.

    Example (`local_runner.run` does this around `LocalDagRunner().run(pipeline)`):
    ```python
    metadata_path = "outputs/metadata/camenn/metadata.db"  # `PipelineConfig.metadata_path`
    with exclusive_run(metadata_path):
        assert cancel_interrupted(metadata_path, "camenn", "outputs/pipelines/camenn") == []  # no run died
        try:
            with exclusive_run(metadata_path):  # a second run over the same outputs is refused
                raise AssertionError("not reached")
        except ConcurrentRunError as error:
            print(error)
    ```
    """
    path = os.path.join(os.path.dirname(metadata_path), LOCK_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ConcurrentRunError(
                f"another run of this pipeline is using {os.path.dirname(metadata_path)} ({holder}); wait for it "
                "to end, or give this run other outputs (--outputs)"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)


def _store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(config)


def _partial_folders(pipeline_root: str, node_id: str, execution_id: int) -> List[str]:
    """Where the launcher put an execution's outputs, <root>/<node>/<output>/<execution id>, and its
    system folders, <root>/<node>/.system/<kind>/<execution id>; and the node's stateful working
    folders, which a finished execution removes (one left over is an interrupted execution's, and a
    local rerun never reuses it: each execution gets a new one)."""
    if "://" in pipeline_root:  # a remote filesystem: left as it is
        return []
    node = os.path.join(pipeline_root, node_id)
    folders = (
        glob.glob(os.path.join(node, "*", str(execution_id)))
        + glob.glob(os.path.join(node, ".system", "*", str(execution_id)))
        + glob.glob(os.path.join(node, ".system", "stateful_working_dir", "*"))
    )
    return [folder for folder in folders if os.path.isdir(folder)]


def cancel_interrupted(metadata_path: str, pipeline_name: str, pipeline_root: str) -> List[str]:
    """Marks the pipeline's executions left NEW or RUNNING as CANCELED and removes their partial outputs.

    Call it only under `exclusive_run`: then no such execution can still be running.

    Args:
        metadata_path: the SQLite ML Metadata store of the local runner.
        pipeline_name: the pipeline whose executions to look at.
        pipeline_root: where its components write (`<root>/<node>/...`).

    Returns:
        One line per execution cancelled (node and execution id), for the log.
    """
    if not os.path.exists(metadata_path):
        return []
    store = _store(metadata_path)
    pipeline = store.get_context_by_type_and_name("pipeline", pipeline_name)
    if pipeline is None:
        return []
    cancelled = []
    for execution in store.get_executions_by_context(pipeline.id):
        if execution.last_known_state not in _ACTIVE:
            continue
        nodes = [c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        node = nodes[0] if nodes else "?"
        execution.last_known_state = metadata_store_pb2.Execution.CANCELED
        execution.custom_properties[
            INTERRUPTED
        ].string_value = "its run ended before it did (the process was killed or crashed); cancelled by the next run"
        store.put_executions([execution])
        removed = []
        for folder in _partial_folders(pipeline_root, node, execution.id) if nodes else []:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(os.path.relpath(folder, pipeline_root))
        cancelled.append(
            f"{node} (execution {execution.id}): cancelled"
            + (f", partial outputs removed: {', '.join(sorted(removed))}" if removed else "")
        )
    return cancelled
