"""``promptgen cache ACTION``: inspect, check, clear, fill (extract) and merge the LMDB feature cache."""

from __future__ import annotations

import argparse
import json
import sys

from promptgen.cli.common import backbone_config
from promptgen.runs.settings import parse_settings


def cmd_cache_info(args: argparse.Namespace) -> int:
    """Show what the feature cache holds: entries and size per backbone fingerprint, dataset and transform."""
    from promptgen.storage.cache import FeatureCache

    with FeatureCache(args.cache_dir) as cache:
        rows = cache.info()
    if args.json:
        print(json.dumps({"path": str(cache.path), "groups": rows}, indent=2))
        return 0
    print(f"feature cache: {cache.path}")
    columns = ("fingerprint", "dataset", "transform", "views", "entries", "bytes")
    table = [columns] + [tuple(str(row[c]) for c in columns) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(line, widths)).rstrip())
    print(f"{sum(r['entries'] for r in rows)} entries, {sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    """Check every cached entry (checksum, width, finite values) and the database's structure (exit status 1 if
    anything is wrong); --repair drops what is bad."""
    from promptgen.storage.cache import FeatureCache
    from promptgen.storage.cache_maintenance import salvage_files
    from promptgen.storage.lmdb_env import DamagedCacheError

    try:
        cache = FeatureCache(args.cache_dir)
    except DamagedCacheError as error:  # LMDB must not even map it: report, and rebuild from its bytes if asked
        print(f"problem: {error}")
        if not args.repair:
            print("promptgen cache verify --repair rebuilds it from its intact entries", file=sys.stderr)
            return 1
        result = salvage_files(args.cache_dir)
        print(f"repaired: rebuilt the database from its intact pages; {result['kept']} entries kept, "
              f"{result['dropped']} dropped (runs compute what is missing again)")
        return 0
    with cache:
        problems = cache.verify()
        for problem in problems[:args.show]:
            print(f"problem: {problem}")
        if len(problems) > args.show:
            print(f"... and {len(problems) - args.show} more (--show N lists more)")
        if problems and args.repair:
            result = cache.repair()
            how = "rebuilt the database from its readable entries" if result["rebuilt"] else "dropped the bad entries"
            print(f"repaired {cache.path}: {how}; {result['dropped']} dropped, {result['kept']} kept (what was "
                  f"dropped is computed again when a run needs it)")
            return 0
        entries = sum(row["entries"] for row in cache.info()) if not problems else None
    if problems:
        print(f"{len(problems)} problem(s) in {cache.path}: `promptgen cache verify --repair` drops the bad entries, "
              f"`promptgen cache clear --all` starts afresh", file=sys.stderr)
        return 1
    print(f"ok: {entries} entries in {cache.path}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Delete cached features of one backbone (fingerprint or its prefix) and/or one dataset, or --all (which works
    on a damaged cache too)."""
    from promptgen.storage.cache import FeatureCache
    from promptgen.storage.cache_maintenance import clear_files
    from promptgen.errors import CacheError, ConfigError

    filtered = args.backbone is not None or args.dataset is not None
    if filtered == args.all:
        raise ConfigError("cache clear: choose what to delete: --backbone and/or --dataset, or --all for everything")
    try:
        with FeatureCache(args.cache_dir) as cache:
            removed = cache.clear(args.backbone, args.dataset)
    except CacheError as error:
        if not args.all:
            raise CacheError(f"{error} (a damaged cache can only be cleared whole: --all)") from None
        path = clear_files(args.cache_dir)
        print(f"the cache could not be read ({error}); deleted its files in {path}")
        return 0
    print(f"removed {removed} entries from {cache.path}")
    if args.all:  # every stored stage-I prompt label goes with the features
        import shutil

        from promptgen.storage.label_store import store_dir

        labels = store_dir(args.cache_dir)
        if labels.is_dir():
            count = sum(1 for _ in labels.iterdir())
            shutil.rmtree(labels)
            print(f"removed {count} stored prompt labels from {labels}")
    return 0


def cmd_cache_extract(args: argparse.Namespace) -> int:
    """Compute a dataset's features ahead of the runs: whole, one shard (--shard I/N, or torchrun's RANK and
    WORLD_SIZE), or --shards N run by a launcher (processes, ray) and merged."""
    import os

    import attrs

    from promptgen.toolkit.device import choose_device
    from promptgen.errors import ConfigError
    from promptgen.runs.extraction import ExtractJob, extract, extract_elsewhere, merge
    from promptgen.components.presets import preset_for_device, run_preset
    from promptgen.components.registry import default_registry
    from promptgen.components.resolve import build_launcher

    registry = default_registry()
    if not registry.has("dataset", args.dataset):
        raise ConfigError(f"unknown dataset {args.dataset!r}; registered: {', '.join(registry.names('dataset'))}"
                          f"{registry.unknown_hint('dataset', args.dataset)}")
    spec = args.shard or (f"{os.environ.get('RANK', '0')}/{os.environ['WORLD_SIZE']}" if "WORLD_SIZE" in os.environ
                          else None)
    if spec and args.shards:
        raise ConfigError("cache extract: --shard I/N runs one shard; --shards N runs them all: choose one")
    try:
        shard, shards = (int(part) for part in spec.split("/")) if spec else (0, args.shards or 1)
    except ValueError:
        raise ConfigError(f"--shard must be I/N, got {spec!r}") from None
    backbone = backbone_config(args)
    preset = preset_for_device(args.preset, choose_device(backbone.device).type)
    views = args.views or run_preset(preset)["views"]
    job = ExtractJob(dataset=args.dataset, backbone=attrs.asdict(backbone), cache_dir=args.cache_dir,
                     data_root=args.data_root, preset=preset, overrides=parse_settings(args.set),
                     domains=tuple(args.domains) if args.domains else None, views=views, shard=shard, shards=shards,
                     num_workers=args.workers, progress=not args.quiet)
    if spec or shards == 1:  # this process's part
        result = extract(job, registry)
        print(f"{args.dataset}: {result['features']} features of {result['samples']} samples in {result['root']}"
              + (f" (shard {shard}/{shards}; `promptgen cache merge` once every shard is done)" if spec else ""))
        return 0
    launcher = build_launcher(registry, args.launcher, {"workers": args.launcher_workers, "address": args.ray_address},
                              progress=not args.quiet)
    jobs = [attrs.evolve(job, shard=i, progress=False) for i in range(shards)]
    if getattr(launcher, "shares_disk", True):  # each shard writes its own LMDB here; merged once all are done
        results = launcher.run(extract, jobs)
        merged = merge(args.cache_dir)
    else:  # each shard extracts in its node's cache and its entries come back here
        results, merged = extract_elsewhere(jobs, launcher, args.cache_dir)
    print(f"{args.dataset}: {sum(r['features'] for r in results)} features in {shards} shards ({args.launcher}); "
          f"merged {merged['copied']} entries into the cache" + (f", {merged['damaged']} damaged left out"
                                                                 if merged["damaged"] else ""))
    return 0


def cmd_cache_merge(args: argparse.Namespace) -> int:
    """Fold the shards that `promptgen cache extract --shard` wrote into the cache (each entry checked)."""
    from promptgen.runs.extraction import merge

    result = merge(args.cache_dir, keep=args.keep)
    if not result["shards"]:
        print("no shards to merge")
        return 0
    print(f"merged {result['shards']} shard(s): {result['copied']} entries"
          + (f"; {result['damaged']} damaged entries left out (those shards are kept)" if result["damaged"] else ""))
    return 1 if result["damaged"] else 0
