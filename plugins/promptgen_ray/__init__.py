"""Built-in plugin: the ``ray`` launcher — each job a Ray task, on an existing cluster or a local Ray instance.

Ray is an optional extra: ``pip install "promptgen[ray]"``. It is imported only when the launcher runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import attrs
from tqdm.auto import tqdm

from promptgen import hookimpl
from promptgen.toolkit import option, PluginError
from promptgen_local import LauncherOptions  # progress, every launcher's


class RayLauncher:
    """Runs each job as a Ray task with ``cpus_per_job`` CPUs (and ``gpus_per_job`` GPUs).

    ``address``: a running cluster ("ray://head:10001" or "auto"); None starts a local instance with
    ``num_cpus`` CPUs (default: all) that is shut down afterwards. On a cluster, every node needs
    promptgen installed; ``py_modules`` are shipped with the tasks (default: the top-level package
    that defines the function being run, wherever it was imported from -- a checkout or a wheel --
    so that a task can unpickle it on a node that lacks it).
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

    def __init__(self, options: Options = Options()):
        self.options = options

    def run(self, fn, jobs):
        try:
            import ray
        except ImportError:
            raise PluginError('the ray launcher needs Ray: pip install "promptgen[ray]"') from None
        jobs = list(jobs)
        started = not ray.is_initialized()
        if started:
            if self.options.address:
                ray.init(address=self.options.address, runtime_env={"py_modules": self._modules(fn)},
                         log_to_driver=False)
            else:
                ray.init(num_cpus=self.options.num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(num_cpus=self.options.cpus_per_job, num_gpus=self.options.gpus_per_job)(_call)
            pending = {task.remote(fn, job): index for index, job in enumerate(jobs)}
            results = [None] * len(jobs)
            with tqdm(total=len(jobs), desc="jobs", unit="job", disable=not self.options.progress) as bar:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    results[pending.pop(ready[0])] = ray.get(ready[0])
                    bar.update(1)
            return results
        finally:
            if started:
                ray.shutdown()

    def _modules(self, fn) -> list[str]:
        if self.options.py_modules is not None:
            return self.options.py_modules
        top = type(fn).__module__.split(".")[0]  # e.g. benchmarks, for the harness's job wrapper
        origin = getattr(sys.modules.get(top), "__file__", None)
        return [str(Path(origin).parent)] if origin and Path(origin).name == "__init__.py" else []


def _call(fn, job):
    return fn(job)


@hookimpl
def register_launchers(register):
    register("ray", RayLauncher)
