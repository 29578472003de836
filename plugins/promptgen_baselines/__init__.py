"""Built-in plugin: the CLIP baselines of the SPG paper's Table 1.

On cached image features: ``linear-probe`` (SPG's clip_lr), ``cocoop`` (Zhou et al., CVPR 2022) and
``dpl`` (Zhang et al., 2021). On images (they change what the image encoder sees): ``vp`` (Bahng et
al., 2022), ``vpt`` (Jia et al., ECCV 2022) and ``maple`` (Khattak et al., CVPR 2023), the last two for
ViT image towers. Each is a method registered through ``register_methods``, exactly as a third-party
package would; see docs/methods.md for what each learns and where we differ from the reference code.
"""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_methods(register):
    # lazy: listing or checking names imports no torch (promptgen.components.lazy)
    register("linear-probe", lazy("promptgen_baselines.linear_probe:LinearProbe"))
    register("cocoop", lazy("promptgen_baselines.cocoop_dpl:CoCoOp"))
    register("dpl", lazy("promptgen_baselines.cocoop_dpl:DPL"))
    register("vp", lazy("promptgen_baselines.visual:VP"))
    register("vpt", lazy("promptgen_baselines.visual:VPT"))
    register("maple", lazy("promptgen_baselines.maple:MaPLe"))
