"""promptgen.errors (the error types, a leaf: it imports nothing from promptgen) and how a command shows any error:
one line and an exit code (promptgen.cli.failures.describe), naming the plugin to blame for a bug in a plugin
(promptgen.cli.blame). The commands' end-to-end messages are in test_failure_modes.py."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest

from promptgen import errors
from promptgen.cli.blame import _owner, plugin_at_fault
from promptgen.cli.failures import BAD_INPUT, FAILURE, INTERRUPTED, TERMINATED, describe
from promptgen.errors import (CacheError, ConfigError, DatasetError, GeneratorError, PluginError, Terminated,
                              UnknownComponentError, suggestion)


def test_errors_is_a_leaf():
    tree = ast.parse(Path(errors.__file__).read_text(encoding="utf-8"))
    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names]
    assert not [name for name in imported if name and name.split(".")[0] == "promptgen"], imported


def test_exit_codes_are_the_documented_ones():
    from benchmarks.records import PARTIAL

    assert (BAD_INPUT, FAILURE, INTERRUPTED, TERMINATED, PARTIAL) == (2, 1, 130, 143, 3)


def test_a_config_error_names_its_field_or_the_flag_that_set_it():
    error = ConfigError("must be >= 0, got -1", field="RunConfig.seed")
    assert str(error) == "RunConfig.seed must be >= 0, got -1"
    assert error.naming("--seed") == "--seed must be >= 0, got -1"
    assert ConfigError("plain").naming("--seed") == "plain" and ConfigError("plain").field is None


@pytest.mark.parametrize("error, code", [
    (ConfigError("bad value"), BAD_INPUT),
    (UnknownComponentError("unknown generator 'x'"), BAD_INPUT),
    (PluginError("a plugin broke"), BAD_INPUT),
    (DatasetError("no such folder"), BAD_INPUT),
    (CacheError("the cache is damaged"), FAILURE),
    (GeneratorError("NaN prompts"), FAILURE),
])
def test_a_promptgen_error_is_its_own_message_and_bad_input_or_a_failure(error, code):
    assert describe(error) == (str(error), code)


def test_interruptions_say_how_to_resume():
    line, code = describe(KeyboardInterrupt())
    assert (line, code) == ("interrupted; rerun the same command to resume", INTERRUPTED)
    line, code = describe(Terminated())
    assert code == TERMINATED and line.startswith("interrupted by SIGTERM") and "rerun the same command" in line


@pytest.mark.parametrize("name, start", [
    ("ENOSPC", "no space left on the disk holding /data/x -> /data/y: free some space"),
    ("EACCES", "permission denied: /data/x -> /data/y"),
    ("EROFS", "read-only file system: /data/x -> /data/y: write elsewhere"),
    ("ENOENT", "no such file or directory: /data/x -> /data/y"),
])
def test_an_os_error_is_said_in_words_naming_its_paths(name, start):
    error = OSError(getattr(errno, name), "strerror", "/data/x", None, "/data/y")
    line, code = describe(error)
    assert code == FAILURE and line.startswith(start), line


def test_an_os_error_without_words_of_its_own_gives_the_systems():
    assert describe(OSError(errno.EIO, "Input/output error", "/data/x")) == ("Input/output error: /data/x", FAILURE)
    assert describe(OSError(errno.EIO, "Input/output error")) == ("Input/output error: (unknown path)", FAILURE)


def test_text_memory_lmdb_and_safetensors_errors_are_one_line_each():
    line, code = describe(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"))
    assert (line, code) == ("a file is not UTF-8 text (invalid at byte 0)", BAD_INPUT)
    assert describe(MemoryError())[0].startswith("out of memory: use a smaller batch")
    lmdb_error = type("Error", (Exception,), {"__module__": "lmdb"})("mdb_get: damaged")
    line, code = describe(lmdb_error)
    assert code == FAILURE and line.startswith("the feature cache failed (Error: mdb_get: damaged)")
    assert "promptgen cache verify --repair" in line
    safetensors_error = type("SafetensorError", (Exception,), {"__module__": "safetensors_rust"})("header too large")
    assert describe(safetensors_error) == ("not a readable .safetensors file (header too large)", BAD_INPUT)


def test_an_unexpected_error_of_promptgens_own_asks_for_a_report():
    try:
        {}["missing"]
    except KeyError as error:
        line, code = describe(error)
    assert code == FAILURE and line == ("unexpected KeyError: 'missing' (run again with --debug for the traceback, "
                                        "and please report it)")


BUGGY_PLUGIN = """
    from promptgen import hookimpl

    class BuggyDataset:
        '''A dataset whose samples raise.'''
        domains = ("a", "b")
        classes = ("x",)

        def samples(self, domain, split):
            return {}[domain]

        def load_image(self, sample):
            return None

    @hookimpl
    def register_datasets(register):
        register("buggy", BuggyDataset)
"""


def test_a_bug_in_a_plugin_names_the_plugin_its_distribution_the_component_and_the_line(install_plugin):
    install_plugin("pg_buggy", BUGGY_PLUGIN)
    from promptgen.components.registry import default_registry

    dataset = default_registry().create("dataset", "buggy")
    with pytest.raises(KeyError) as raised:
        dataset.samples("a", "train")
    blamed = "plugin 'pg_buggy' (distribution pg-buggy 0.1; dataset 'buggy') at pg_buggy.py:10"
    assert plugin_at_fault(raised.value) == blamed
    line, code = describe(raised.value)
    assert code == FAILURE and line == (f"{blamed} raised KeyError: 'a'; this is a bug in that plugin: run again "
                                        f"with --debug for the traceback and report it to its authors")


def test_the_owner_of_a_module_is_the_plugin_of_the_longest_package_holding_it_else_of_its_top_package():
    modules = {"acme": "acme", "acme.plugin": "acme-plugin", "other.thing": "other"}
    assert _owner("acme.plugin.datasets", modules) == "acme-plugin"
    assert _owner("acme.tools", modules) == "acme"
    assert _owner("other.helpers", modules) == "other"
    assert _owner("torch.nn", modules) is None


def test_a_full_disk_mid_write_names_the_file(tmp_path):
    """An OSError met while flushing names no file: the atomic writer names its target, and leaves no temporary."""
    from promptgen.files import atomic_file

    target = tmp_path / "features.npz"
    target.write_bytes(b"old")

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised, atomic_file(target, "wb") as file:
        Full().write(b"x" * 10)
    assert raised.value.filename == str(target)
    line, code = describe(raised.value)
    assert code == 1 and line.startswith(f"no space left on the disk holding {target}")
    assert [p.name for p in tmp_path.iterdir()] == ["features.npz"] and target.read_bytes() == b"old"
    assert file.closed


def test_suggestion_picks_the_closest_name_or_none():
    names = ["template-ensemble", "zero-shot", "coop", "cocoop"]
    assert suggestion("template-ensembel", names) == "; did you mean 'template-ensemble'?"
    assert suggestion("COOP", names) == "; did you mean 'coop'?"
    assert suggestion("zzzz", names) == "" and suggestion("coop", names) == "" and suggestion("x", []) == ""
