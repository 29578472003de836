"""Built-in plugin: launchers on this machine — ``local`` (one job after another in this process, the default)
and ``processes`` (a pool of worker processes)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

from tqdm.auto import tqdm

from promptgen import hookimpl


class LocalLauncher:
    """Runs jobs one after another in this process (the default)."""

    def __init__(self, progress: bool = True):
        self.progress = progress

    def run(self, fn, jobs):
        return [fn(job) for job in tqdm(jobs, desc="jobs", unit="job", disable=not self.progress)]


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class ProcessLauncher:
    """Runs jobs in a pool of ``workers`` processes (spawned: safe with torch), splitting the cores between them.

    ``fn`` and the jobs must pickle; results come back in job order.
    """

    def __init__(self, workers: int = 2, threads_per_worker: int | None = None, progress: bool = True):
        self.workers = max(1, int(workers))
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // self.workers)
        self.progress = progress

    def run(self, fn, jobs):
        jobs = list(jobs)
        if not jobs:
            return []
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_limit_threads,
                                                    initargs=(self.threads,)) as pool:
            futures = {pool.submit(fn, job): index for index, job in enumerate(jobs)}
            results = [None] * len(jobs)
            done = concurrent.futures.as_completed(futures)
            for future in tqdm(done, total=len(jobs), desc="jobs", unit="job", disable=not self.progress):
                results[futures[future]] = future.result()
        return results


@hookimpl
def register_launchers(register):
    register("local", LocalLauncher)
    register("processes", ProcessLauncher)
