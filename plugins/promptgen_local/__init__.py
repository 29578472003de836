"""Built-in plugin: launchers on this machine — ``local`` (one job after another in this process, the default)
and ``processes`` (a pool of worker processes)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Annotated

import attrs
from tqdm.auto import tqdm

from promptgen import hookimpl
from promptgen.toolkit import option, usable_cores


@attrs.frozen(kw_only=True)
class LauncherOptions:
    """What every launcher takes (the ray launcher's too): the run value ``progress``."""

    progress: bool = True


class LocalLauncher:
    """Runs jobs one after another in this process (the default)."""

    Options = LauncherOptions

    def __init__(self, options: LauncherOptions = LauncherOptions()):
        self.options = options

    def run(self, fn, jobs, done=None):
        results = []
        for index, job in enumerate(tqdm(jobs, desc="jobs", unit="job", disable=not self.options.progress)):
            results.append(fn(job))
            if done is not None:
                done(index, results[-1])
        return results


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)  # jobs run one op graph at a time: extra inter-op threads only compete


class ProcessLauncher:
    """Runs jobs in a pool of ``workers`` processes (spawned: safe with torch), splitting the cores between them.

    Each worker gets ``threads_per_worker`` torch threads (default: its share of the usable cores, at
    least one), and OpenMP threads that sleep rather than spin while they wait: torch's default of one
    spinning thread per core in every worker makes workers, and anything else on the machine, slow
    each other down many times over. ``fn`` and the jobs must pickle; results come back in job order.
    """

    @attrs.frozen(kw_only=True)
    class Options(LauncherOptions):
        workers: Annotated[int, option("worker processes, each running one job at a time", minimum=1)] = 2
        threads_per_worker: Annotated[int | None, option("torch threads of each worker; None: its share of the "
                                                         "usable cores, at least one", minimum=1)] = None

    def __init__(self, options: Options = Options()):
        self.options = options
        self.workers = max(1, int(options.workers))  # jobs at once (the Launcher protocol's optional member)
        self.threads = options.threads_per_worker or max(1, usable_cores() // self.workers)

    def run(self, fn, jobs, done=None):
        jobs = list(jobs)
        if not jobs:
            return []
        context = multiprocessing.get_context("spawn")
        # Read by the OpenMP runtime when a worker first imports torch: in the environment the workers inherit.
        saved = {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        os.environ.update({"OMP_WAIT_POLICY": saved["OMP_WAIT_POLICY"] or "PASSIVE", "OMP_NUM_THREADS": str(self.threads)})
        try:
            with concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_limit_threads,
                                                        initargs=(self.threads,)) as pool:
                futures = {pool.submit(fn, job): index for index, job in enumerate(jobs)}
                results = [None] * len(jobs)
                finished = concurrent.futures.as_completed(futures)
                for future in tqdm(finished, total=len(jobs), desc="jobs", unit="job",
                                   disable=not self.options.progress):
                    index = futures[future]
                    try:
                        results[index] = future.result()
                    except Exception as error:  # its worker died (BrokenProcessPool): the job could not run
                        if done is None:
                            raise
                        results[index] = error
                    if done is not None:
                        done(index, results[index])
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return results


@hookimpl
def register_launchers(register):
    register("local", LocalLauncher)
    register("processes", ProcessLauncher)
