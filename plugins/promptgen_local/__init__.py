"""Built-in plugin: the ``local`` launcher (jobs one after another in this process)."""

from tqdm.auto import tqdm

from promptgen import hookimpl


class LocalLauncher:
    """Runs jobs one after another in this process (the default)."""

    def __init__(self, progress: bool = True):
        self.progress = progress

    def run(self, fn, jobs):
        return [fn(job) for job in tqdm(jobs, desc="jobs", unit="job", disable=not self.progress)]


@hookimpl
def register_launchers(register):
    register("local", LocalLauncher)
