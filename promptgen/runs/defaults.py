"""The documented defaults: the only place the core names built-in plugins.

The core engine and the benchmark harness know no plugin by name (tests/test_core_names_no_plugin.py
checks this); what a command runs when the user names nothing is set here, in one place, and
written in the README and the commands' --help.
"""

DATASET = "digits-dg"  # the offline world promptgen ships (docs/world.md)
BACKBONE = "tiny-clip-digits"  # its CLIP, weights shipped with promptgen
METHOD = "spg"  # the reference method (SPG with its CGAN)
LAUNCHER = "local"  # one job after another in this process
PERF_GENERATOR = "cgan"  # the generator the perf suite times (SPG's)
PERF_CLASS_NAMES = "domainnet"  # the dataset whose class names give the perf suite realistic prompts (345)
EXTRACT_LAUNCHER = "processes"  # runs `promptgen cache extract --shards N` here, one process per shard
