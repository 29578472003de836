"""Imported at start-up by every Python process of a test cluster's worker node (tests/test_distributed.py puts
this folder on the node's PYTHONPATH): any file operation under $PROMPTGEN_TEST_DRIVER_DIR (the driver's --out and
cache) raises, as it would on a node with its own disk, so a job that reads or writes there fails the test."""

import os
import sys

_DRIVER = os.environ.get("PROMPTGEN_TEST_DRIVER_DIR")
_EVENTS = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.listdir", "os.scandir",
           "os.chdir", "shutil.rmtree", "shutil.copyfile", "shutil.move", "os.truncate", "os.utime", "os.chmod"}


def _refuse_the_drivers_disk(event, args):
    if event not in _EVENTS or not args:
        return
    for path in args[:2]:
        if isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.abspath(os.fsdecode(path))
            if full == _DRIVER or full.startswith(_DRIVER + os.sep):
                raise PermissionError(f"node {os.environ.get('PROMPTGEN_TEST_NODE')} has no disk of the driver's: "
                                      f"{event} {full}")


if _DRIVER:
    sys.addaudithook(_refuse_the_drivers_disk)
