"""What it costs to ship features to a node instead of extracting them there (docs/distributed.md).

    python -m benchmarks.shipping [--features 100000] [--width 512] [--out shipping.json]

On a Ray cluster started on this machine (a head with no CPUs for jobs and one worker node with its own cache),
times each step a sweep on a cluster without a shared disk takes (benchmarks.remote) for a pack of ``--features``
synthetic entries of ``--width`` float16 values (512: ViT-B/16's): packing them out of the driver's cache, Ray
carrying the pack to the node (ray.put, and a task on the node receiving it), storing it into the node's cache, and
a later job on the same node finding every entry present. The transfer here runs over loopback: on a real network
the bandwidth is the link's, which the projection takes as a parameter (``--link-mb-s``; default: the rate measured
here).

The projection to DomainNet sets shipping (pack + link + store, once per node) against extracting on every node at
``--extract-images-s`` (2.5 images/s: ViT-B/16 on this machine's 2 CPU cores, docs/spg.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOMAINNET_IMAGES = 586_575
# features a DomainNet run reads: every image once with the eval transform, plus the train views of its train
# split (about 70 % of the images; one view under the cpu preset, which docs/spg.md's table uses)
DOMAINNET_FEATURES = DOMAINNET_IMAGES + int(0.7 * DOMAINNET_IMAGES)
FINGERPRINT = "backbone-ViT-B-16-0123456789abcdef"  # as long as an open_clip backbone's


def synthetic_cache(root: Path, features: int, width: int) -> list[bytes]:
    """A driver's cache of ``features`` entries shaped like DomainNet's (key length, width): their keys."""
    from promptgen.storage.cache import FeatureCache
    from promptgen.storage.feature_format import META_TAG, encode_entry, feature_key

    rng = np.random.default_rng(0)
    keys = [feature_key(FINGERPRINT, "eval-0a1b2c3d", 0, "synthetic", f"{i:016x}",
                        f"sketch/class_{i % 345:03d}/sketch_{i:06d}.jpg") for i in range(features)]
    with FeatureCache(root) as cache:
        for start in range(0, features, 8192):
            chunk = keys[start:start + 8192]
            values = rng.standard_normal((len(chunk), width)).astype(np.float16)

            def put(txn, chunk=chunk, values=values):
                txn.put(META_TAG + FINGERPRINT.encode(), json.dumps({"embed_dim": width}).encode())
                for key, value in zip(chunk, values):
                    txn.put(key, encode_entry(int(value[0] > 0), "sketch", value))

            cache._write(put)
    return keys


def _store_on_node(pack) -> dict:
    """On the node: the pack stored into the node's own cache ($PROMPTGEN_CACHE_DIR), and the seconds it took."""
    from promptgen.storage import feature_pack
    from promptgen.storage.cache import FeatureCache

    start = time.perf_counter()
    with FeatureCache() as cache:
        stored = feature_pack.store(pack, cache)
    return {**stored, "seconds": time.perf_counter() - start, "received": time.time()}


def _empty(_) -> float:
    return time.time()


def measure(features: int, width: int, progress: bool = True) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from promptgen.storage import feature_pack
    from promptgen.storage.cache import FeatureCache

    say = print if progress else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory(prefix="promptgen-shipping-") as scratch:
        scratch = Path(scratch)
        say(f"building a driver cache of {features:,} features of width {width} ...", flush=True)
        keys = synthetic_cache(scratch / "driver", features, width)
        start = time.perf_counter()
        with FeatureCache(scratch / "driver") as cache:
            pack = feature_pack.pack(cache, keys)
        pack_s = time.perf_counter() - start
        megabytes = pack.nbytes / 2**20
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        try:
            cluster.add_node(num_cpus=1, env_vars={"PROMPTGEN_CACHE_DIR": str(scratch / "node"),
                                                   "PYTHONPATH": os.pathsep.join(sys.path)})
            ray.init(address=cluster.address, log_to_driver=False)
            store, empty = ray.remote(num_cpus=1)(_store_on_node), ray.remote(num_cpus=1)(_empty)
            ray.get(empty.remote(None))  # the node's worker started: not counted below
            start = time.perf_counter()
            reference = ray.put(pack)
            put_s = time.perf_counter() - start
            sent = time.time()
            first = ray.get(store.remote(reference))
            carry_s = first["received"] - sent - first["seconds"]  # fetch to the node and hand to the task
            later = ray.get(store.remote(reference))  # a second job on that node: every entry present
        finally:
            ray.shutdown()
            cluster.shutdown()
    per_feature = pack.nbytes / max(1, pack.entries)
    return {"features": pack.entries, "width": width, "pack_mb": round(megabytes, 2),
            "bytes_per_feature": round(per_feature, 1), "pack_s": round(pack_s, 3), "put_s": round(put_s, 3),
            "carry_s": round(carry_s, 3), "store_s": round(first["seconds"], 3), "stored": first["copied"],
            "later_job_s": round(later["seconds"], 3), "later_present": later["present"],
            "pack_mb_s": round(megabytes / pack_s, 1), "carry_mb_s": round(megabytes / max(carry_s, 1e-6), 1),
            "store_mb_s": round(megabytes / first["seconds"], 1)}


def project(row: dict, link_mb_s: float, extract_images_s: float, nodes: int) -> dict:
    """DomainNet: shipping its features to ``nodes`` nodes (pack once; link and store per node, the link shared)
    against each node extracting them itself."""
    megabytes = DOMAINNET_FEATURES * row["bytes_per_feature"] / 2**20
    pack_s = megabytes / row["pack_mb_s"]
    ship_s = pack_s + nodes * megabytes / link_mb_s + megabytes / row["store_mb_s"]
    extract_s = DOMAINNET_FEATURES / extract_images_s  # every node encodes every feature itself
    return {"domainnet_features": DOMAINNET_FEATURES, "domainnet_pack_mb": round(megabytes, 1), "nodes": nodes,
            "link_mb_s": link_mb_s, "ship_s": round(ship_s, 1), "extract_images_s": extract_images_s,
            "extract_per_node_h": round(extract_s / 3600, 1), "ratio": round(extract_s / ship_s, 1),
            "sharded_extract_h": round(extract_s / nodes / 3600, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shipping", description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=100_000, help="entries in the pack (default 100,000)")
    parser.add_argument("--width", type=int, default=512, help="floats per feature (default 512, ViT-B/16's)")
    parser.add_argument("--link-mb-s", type=float, help="the cluster link's MB/s for the projection (default: the "
                                                        "rate measured here, over loopback)")
    parser.add_argument("--extract-images-s", type=float, default=2.5, help="a node's extraction rate for the "
                                                                            "projection (default 2.5: ViT-B/16 on "
                                                                            "2 CPU cores, docs/spg.md)")
    parser.add_argument("--nodes", type=int, default=8, help="nodes the projection ships to (default 8)")
    parser.add_argument("--out", help="also write the numbers to this JSON file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.features < 1 or args.width < 1 or args.nodes < 1 or (args.link_mb_s or 1) <= 0 or \
            args.extract_images_s <= 0:
        parser.error("--features, --width, --nodes, --link-mb-s and --extract-images-s must be positive")
    row = measure(args.features, args.width, progress=not args.quiet)
    projection = project(row, args.link_mb_s or row["carry_mb_s"], args.extract_images_s, args.nodes)
    print(f"measured here ({row['features']:,} features of width {row['width']}, {row['pack_mb']} MB, "
          f"{row['bytes_per_feature']} bytes each):\n"
          f"  pack on the driver   {row['pack_s']:8.3f} s  ({row['pack_mb_s']} MB/s)\n"
          f"  ray.put              {row['put_s']:8.3f} s\n"
          f"  to the node's task   {row['carry_s']:8.3f} s  ({row['carry_mb_s']} MB/s, loopback)\n"
          f"  store in its cache   {row['store_s']:8.3f} s  ({row['store_mb_s']} MB/s)\n"
          f"  a later job there    {row['later_job_s']:8.3f} s  (every entry present)\n"
          f"DomainNet ({projection['domainnet_features']:,} features, {projection['domainnet_pack_mb']} MB) to "
          f"{projection['nodes']} nodes over {projection['link_mb_s']:.0f} MB/s: {projection['ship_s']} s shipped, "
          f"vs {projection['extract_per_node_h']} h extracting on every node at {projection['extract_images_s']} "
          f"images/s ({projection['ratio']}x); extracted once in {projection['nodes']} shards: "
          f"{projection['sharded_extract_h']} h, then shipped")
    if args.out:
        Path(args.out).write_text(json.dumps({"measured": row, "projection": projection}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
