"""Built-in plugin: the ``ray`` launcher — each job a Ray task, on an existing cluster or a local Ray instance.

Ray is an optional extra: ``pip install "promptgen[ray]"``. It is imported only when the launcher runs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import attrs
from tqdm.auto import tqdm

from promptgen import hookimpl
from promptgen.toolkit import option, PluginError, usable_cores
from promptgen_local import LauncherOptions  # progress, every launcher's


class RayLauncher:
    """Runs each job as a Ray task with ``cpus_per_job`` CPUs (and ``gpus_per_job`` GPUs).

    ``address``: a running cluster ("ray://head:10001" or "auto"); None starts a local instance with
    ``num_cpus`` CPUs (default: all) that is shut down afterwards. On a cluster, every node needs
    promptgen installed; ``py_modules`` are shipped with the tasks (default: the top-level package
    that defines the function being run, wherever it was imported from -- a checkout or a wheel --
    so that a task can unpickle it on a node that lacks it).

    A cluster's nodes are taken to share no disk with this machine unless ``shared_disk`` says they do: the
    sweep then ships each job its features and takes its run directory back (docs/distributed.md). The function
    run is put in Ray's object store once, so what it carries (the features) reaches each node once. A job whose
    worker or node dies runs again elsewhere, up to ``max_retries`` times (Ray's task retries); after that its
    error is the job's result.
    """

    @attrs.frozen(kw_only=True)
    class Options(LauncherOptions):
        address: Annotated[str | None, option("a running Ray cluster ('ray://head:10001' or 'auto'); None: start a "
                                              "local instance")] = None
        num_cpus: Annotated[int | None, option("CPUs of the local instance (None: all); unused with an address",
                                               minimum=1)] = None
        cpus_per_job: Annotated[float, option("CPUs Ray reserves for each job (fractions allowed)", minimum=0)] = 1
        gpus_per_job: Annotated[float, option("GPUs Ray reserves for each job (fractions allowed)", minimum=0)] = 0
        py_modules: Annotated[list[str] | None, option("module directories shipped with the tasks to a cluster; "
                                                       "None: the package of the function run")] = None
        shared_disk: Annotated[bool, option("the cluster's nodes see this machine's files at the same paths (a "
                                            "shared filesystem); False: features travel to the jobs and run "
                                            "directories back (a local instance always shares)")] = False
        max_retries: Annotated[int, option("times a job whose worker or node died runs again elsewhere",
                                           minimum=0)] = 3

    def __init__(self, options: Options = Options()):
        self.options = options
        self.shares_disk = options.address is None or options.shared_disk  # the Launcher protocol's member

    @property
    def workers(self) -> int:
        """Jobs at once: the instance's CPUs (a cluster's, asked of it) over ``cpus_per_job``."""
        per_job = self.options.cpus_per_job or 1
        if self.options.address is None and not _ray().is_initialized():
            return max(1, int((self.options.num_cpus or usable_cores()) // per_job))
        with self._connected(None):
            return max(1, int(_ray().cluster_resources().get("CPU", 1) // per_job))

    def run(self, fn, jobs, done=None):
        ray = _ray()
        jobs = list(jobs)
        with self._connected(fn):
            task = ray.remote(num_cpus=self.options.cpus_per_job, num_gpus=self.options.gpus_per_job,
                              max_retries=self.options.max_retries)(_call)
            shared = ray.put(fn)  # once: a node fetches it (and the features it carries) once, for all its tasks
            pending = {task.remote(shared, job): index for index, job in enumerate(jobs)}
            results = [None] * len(jobs)
            with tqdm(total=len(jobs), desc="jobs", unit="job", disable=not self.options.progress) as bar:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    index = pending.pop(ready[0])
                    try:
                        results[index] = ray.get(ready[0])
                    except ray.exceptions.RayError as error:  # its worker or node died and retries ran out
                        if done is None:
                            raise
                        results[index] = error
                    if done is not None:
                        done(index, results[index])
                    bar.update(1)
            return results

    @contextlib.contextmanager
    def _connected(self, fn):
        """Ray, connected to the cluster (or a local instance started) for the block, unless it already was."""
        ray = _ray()
        started = not ray.is_initialized()
        if started:
            if self.options.address:
                modules = self._modules(fn) if fn is not None else []
                ray.init(address=self.options.address, runtime_env={"py_modules": modules} if modules else None,
                         log_to_driver=False)
            else:
                ray.init(num_cpus=self.options.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            if started:
                ray.shutdown()

    def _modules(self, fn) -> list[str]:
        if self.options.py_modules is not None:
            return self.options.py_modules
        top = type(fn).__module__.split(".")[0]  # e.g. benchmarks, for the harness's job wrapper
        origin = getattr(sys.modules.get(top), "__file__", None)
        return [str(Path(origin).parent)] if origin and Path(origin).name == "__init__.py" else []


def _ray():
    try:
        import ray
    except ImportError:
        raise PluginError('the ray launcher needs Ray: pip install "promptgen[ray]"') from None
    return ray


def _call(fn, job):
    return fn(job)


@hookimpl
def register_launchers(register):
    register("ray", RayLauncher)
