"""Where a sweep's runs execute. Each run is fully described by its `<run_dir>/config.yaml`, so an
executor only ships paths:

- sequential: one after another in this process;
- processes: N concurrent `attnlab train --config … --resume` subprocesses, torch threads split
  evenly among them (logs in `<run_dir>/train.log`);
- submitit: jobs on an existing cluster engine (Slurm through submitit; `cluster: local` runs them
  as local subprocesses, which is how the tests exercise this path). Lightning strategies in each
  run's `trainer` section (ddp, fsdp, devices, num_nodes) carry a run across the allocated GPUs.

A run that raises is recorded as status "failed" in its result.json (the sweep goes on); a rerun
of the sweep retries it with --resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .run_files import read_result, write_json


def execute(config_paths: list[Path], executor, out_dir: Path) -> None:
    if executor.kind == "sequential":
        for path in config_paths:
            run_guarded(str(path))
    elif executor.kind == "processes":
        run_processes(config_paths, executor.workers)
    else:
        run_submitit(config_paths, executor, out_dir)


def run_guarded(config_path: str) -> dict:
    """train_from_file that turns an exception into a "failed" result instead of ending the sweep."""
    try:
        from .run import train_from_file

        return train_from_file(config_path, resume=True)
    except Exception as err:  # noqa: BLE001 - any failure of one run is recorded, the sweep goes on
        run_dir = Path(config_path).parent
        result = {
            "status": "failed",
            "message": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
        write_json(run_dir / "result.json", result)
        print(f"attnlab sweep: run {run_dir.name} failed: {result['message']}", file=sys.stderr, flush=True)
        return result


def threads_per_run(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def run_processes(config_paths: list[Path], workers: int) -> None:
    queue, running = list(config_paths), []
    threads = threads_per_run(workers)
    try:
        drive_processes(queue, running, workers, threads)
    except BaseException:  # Ctrl-C: do not leave runs training without their sweep
        for proc, _, _ in running:
            proc.terminate()  # SIGTERM: each run stops after its step, with a checkpoint of it
        for proc, _, _ in running:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def drive_processes(queue: list[Path], running: list, workers: int, threads: int) -> None:
    while queue or running:
        while queue and len(running) < workers:
            path = queue.pop(0)
            log = (path.parent / "train.log").open("a")
            cmd = [sys.executable, "-m", "attnlab.cli", "train", "--config", str(path), "--resume"]
            cmd += ["--trainer.threads", str(threads), "--trainer.progress_bar", "false"]
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), path, log))
        time.sleep(0.2)
        for item in [r for r in running if r[0].poll() is not None]:
            proc, path, log = item
            log.close()
            running.remove(item)
            if proc.returncode != 0 and read_result(path.parent) is None:
                message = f"exit status {proc.returncode}; see {path.parent / 'train.log'}"
                write_json(path.parent / "result.json", {"status": "failed", "message": message})


def run_submitit(config_paths: list[Path], executor, out_dir: Path) -> None:
    try:
        import submitit
    except ImportError:
        raise ValueError(
            "executor.kind = 'submitit' needs the submitit package: pip install submitit"
        ) from None
    ex = submitit.AutoExecutor(folder=out_dir / "submitit", cluster=executor.cluster)
    params = dict(executor.parameters)
    params.setdefault("timeout_min", 24 * 60)
    ex.update_parameters(**params)
    if ex.cluster == "slurm":
        ex.update_parameters(slurm_array_parallelism=executor.workers)
        jobs = ex.map_array(run_guarded, [str(p) for p in config_paths])
        for job in jobs:
            job.result()
        return
    # Local engines start every submitted job at once; keep `workers` in flight.
    queue, running = [str(p) for p in config_paths], []
    while queue or running:
        while queue and len(running) < executor.workers:
            running.append(ex.submit(run_guarded, queue.pop(0)))
        time.sleep(0.2)
        for job in [j for j in running if j.done()]:
            running.remove(job)
            job.result()  # re-raises a crash of the job process itself (run failures are recorded)
