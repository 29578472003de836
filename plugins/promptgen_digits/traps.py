"""digits-traps: the ten digits seen by four fixed "camera traps", a TerraIncognita for the digits world.

Every image of a site shares its camera, light and background (a fixed crop of a photograph that neither
pretraining nor digits-dg uses, out of focus, jittered a little). On it a digit is painted as a marking
on the ground: seen from above at a grazing angle (foreshortened to half its height), off centre, lighter
or darker than the ground, sometimes behind a branch or a post. Two sites are infrared night cameras
(grey, flat, sensor noise, lamp glare, vignetting), one films at dusk (dim, blue, motion blur), one by day
(colour, grass blades in front). Splits, seeding and the cache are digits-dg's (one ``.npz`` per site).
"""

from __future__ import annotations

import functools
from typing import Annotated

import attrs
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from promptgen.toolkit import option
from promptgen_digits import world
from promptgen_digits.dataset import DigitsDG, DigitsOptions, generate
from promptgen_digits.glyphs import CANVAS

FORMAT_VERSION = 1  # bump when the rendering or SITES change: old caches are then ignored, never misread

# One row per site. photo, box: the scene (a skimage photograph; crop top, left, side in its pixels).
# colour: saturation kept; backdrop: mean grey level and contrast kept of the scene (the lamp lights the near
# marker, the far scene stays dim and flat); tint: RGB gain. view: (tilt in degrees, height squash) of the
# marker seen by the fixed camera. contrast: grey levels between paint and ground; noise: sensor sigma;
# occlusion: chance of a branch or post in front; glare (row, col, strength) and vignette of the IR lamp;
# blur: motion-blur length (px); blades: grass blades in front. All at CANVAS (64 px) scale.
SITES = {
    "night-ir-a": dict(photo="stereo_motorcycle", box=(300, 0, 200), look="ir", colour=0.0, backdrop=(70, 0.5),
                       view=(0, 0.5), contrast=120, noise=6, occlusion=0.2, glare=(0.2, 0.25, 60), vignette=0.5),
    "night-ir-b": dict(photo="cell", box=(230, 240, 330), look="ir", colour=0.0, backdrop=(60, 0.4),
                       view=(8, 0.5), contrast=120, noise=7, occlusion=0.2, glare=(0.7, 0.7, 40), vignette=0.6),
    "dusk": dict(photo="stereo_motorcycle", box=(170, 600, 110), look="dusk", colour=0.3, backdrop=(80, 0.6),
                 tint=(0.85, 0.95, 1.2), view=(0, 0.5), contrast=120, noise=4, occlusion=0.2, blur=2.5),
    "day": dict(photo="stereo_motorcycle", box=(400, 250, 100), look="day", colour=1.0, backdrop=(150, 0.8),
                view=(0, 0.55), contrast=110, noise=2, occlusion=0.2, blades=8),
}
SIZE = (0.5, 0.8)  # height of the (foreshortened) digit as a fraction of the canvas; it lies anywhere on it
# Sharp clutter behind the digit hides it from the backbone (in-domain probe 19-36% on three of the sharp
# crops, with no noise or occlusion): the camera focuses on the near marker, the scene behind is out of focus.
FOCUS = 3.0  # px of Gaussian blur on the scene
JITTER = 8  # px the scene may shift by: the camera is fixed, the scene (and the camera's mount) moves a little


class DigitsTraps(DigitsDG):
    """Ten digits at four camera-trap sites (two night infrared, dusk, day), far from what pretraining showed.

    difficulty: 1 is the measured default (docs/world.md); it divides the paint contrast and the digit size
    and multiplies noise, occlusion, blur, blades and the foreshortening (0.5: easier, 2: harder).
    """

    name = "digits-traps"
    format_version = FORMAT_VERSION
    domains = tuple(SITES)

    @attrs.frozen(kw_only=True)
    class Options(DigitsOptions):
        difficulty: Annotated[float, option("how hard the sites are: divides paint contrast and digit size, "
                                            "multiplies noise, occlusion and blur (1: the measured default)",
                                            above=0, maximum=4)] = attrs.field(default=1.0, converter=float)

    def __init__(self, root=None, options: Options = Options()):
        super().__init__(root, options)
        if options.difficulty != 1.0:  # another difficulty is another dataset: its own cache and sample versions
            self.directory = self.directory.with_name(f"{self.directory.name}-d{options.difficulty:g}")

    def _generate(self, domain: str) -> dict[str, np.ndarray]:
        o = self.options
        return generate_site(domain, o.seed, o.per_class, o.image_size, o.difficulty)


def generate_site(site: str, seed: int, per_class: int, image_size: int, difficulty: float = 1.0) -> dict:
    """Every image of one site, deterministic for its arguments (seeded like a digits-dg domain)."""
    return generate(lambda label, rng, sources: render(site, label, rng, sources, difficulty),
                    tuple(SITES).index(site), seed, per_class, image_size)


# --- rendering ----------------------------------------------------------------------------------------


@functools.cache
def scene(site: str) -> np.ndarray:
    """The site's fixed view as its camera renders it, float RGB [CANVAS + JITTER, CANVAS + JITTER]."""
    import skimage.data

    recipe = SITES[site]
    photo = getattr(skimage.data, recipe["photo"])()
    photo = np.asarray(photo[0] if isinstance(photo, tuple) else photo)  # stereo_motorcycle: (left, right, disparity)
    top, left, side = recipe["box"]
    crop = Image.fromarray(photo[top : top + side, left : left + side]).convert("RGB")
    crop = crop.resize((CANVAS + JITTER, CANVAS + JITTER), Image.BILINEAR).filter(ImageFilter.GaussianBlur(FOCUS))
    image = np.asarray(crop, dtype=np.float32)
    grey = image.mean(2, keepdims=True)
    image = grey + recipe["colour"] * (image - grey)
    level, spread = recipe["backdrop"]
    return (level + spread * (image - image.mean())) * np.array(recipe.get("tint", (1.0, 1.0, 1.0)), np.float32)


def marker(label: int, rng, sources, height_range, tilt: float, squash: float) -> np.ndarray:
    """A digits-dg glyph (UCI handwriting or any of the 14 faces) seen at an angle, placed anywhere: a canvas mask.

    Foreshortening is what keeps the class readable to a linear probe yet far from the upright digits the
    text tower was aligned with (squash 0.55 on a plain ground: probe 72%, zero-shot 52%; upright: 85%, 78%).
    """
    glyph = Image.fromarray((world.dg_glyph(label, rng, sources) * 255).astype(np.uint8))
    glyph = glyph.crop(glyph.getbbox())
    glyph = glyph.resize((glyph.width, max(2, round(glyph.height * squash))), Image.BILINEAR)
    if tilt:
        glyph = glyph.rotate(tilt + rng.normal(0, 4), resample=Image.BILINEAR, expand=True)
        glyph = glyph.crop(glyph.getbbox())
    scale = min(rng.uniform(*height_range) * CANVAS / glyph.height, (CANVAS - 4) / glyph.width)
    width, height = max(2, round(glyph.width * scale)), max(2, round(glyph.height * scale))
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    canvas.paste(glyph.resize((width, height), Image.BILINEAR),
                 (int(rng.integers(2, CANVAS - width - 1)), int(rng.integers(2, CANVAS - height - 1))))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def occluder(mask: np.ndarray, rng, ir: bool) -> tuple[np.ndarray, np.ndarray]:
    """A post or a leafy branch across part of the digit: (cover [CANVAS, CANVAS] in [0, 1], RGB colour)."""
    rows, cols = np.flatnonzero(mask.max(1) > 0.3), np.flatnonzero(mask.max(0) > 0.3)
    cover = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(cover)
    if rng.random() < 0.4:  # a post: a vertical bar over a fifth of the digit's width or so
        x = int(rng.integers(cols[0], cols[-1] + 1))
        half = max(1, int(rng.uniform(0.08, 0.18) * (cols[-1] - cols[0] + 1)))
        draw.rectangle((x - half, 0, x + half, CANVAS), fill=255)
        return np.asarray(cover, dtype=np.float32) / 255.0, rng.uniform(25, 70) + rng.uniform(-8, 8, 3)
    y, slope = rng.uniform(rows[0], rows[-1] + 1), rng.uniform(-0.6, 0.6)
    draw.line((0, y - slope * CANVAS / 2, CANVAS, y + slope * CANVAS / 2), fill=255, width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(2, 6))):
        cx, cy = rng.uniform(cols[0] - 4, cols[-1] + 4), rng.uniform(rows[0] - 4, rows[-1] + 4)
        r = rng.uniform(1.5, 3.5)
        draw.ellipse((cx - r, cy - r / 2, cx + r, cy + r / 2), fill=255)
    # Leaves reflect near infrared: light grey on the night cameras, green otherwise.
    colour = rng.uniform(110, 170, 1).repeat(3) if ir else np.array([40.0, 90, 30]) + rng.uniform(-15, 25, 3)
    return np.asarray(cover, dtype=np.float32) / 255.0, colour


def blades(image: np.ndarray, rng, count: int) -> np.ndarray:
    """Thin blades of grass rising from the bottom edge, some in front of the digit."""
    picture = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(count):
        x, length, lean = rng.uniform(0, CANVAS), rng.uniform(6, 28), rng.uniform(-0.5, 0.5)
        bottom = CANVAS + rng.uniform(0, 8)
        colour = tuple(int(v) for v in np.array([60.0, 120, 40]) + rng.uniform(-40, 60, 3))
        draw.line((x, bottom, x + lean * length, bottom - length), fill=colour, width=int(rng.integers(1, 3)))
    return np.asarray(picture, dtype=np.float32)


def motion_blur(image: np.ndarray, length: float, angle: float) -> np.ndarray:
    """The mean of copies shifted along one direction: something moved during the long dusk exposure."""
    pad = int(np.ceil(length / 2)) + 1
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    steps = np.linspace(-length / 2, length / 2, max(2, int(length) + 1))
    shifts = {(round(s * np.sin(angle)), round(s * np.cos(angle))) for s in steps}
    return np.mean([padded[pad + dy : pad + dy + CANVAS, pad + dx : pad + dx + CANVAS] for dy, dx in shifts], axis=0)


def render(site: str, label: int, rng, sources, difficulty: float = 1.0) -> np.ndarray:
    """One canvas-size float RGB image of digit ``label`` at ``site``; ``sources``: UCI indices it may use."""
    recipe = SITES[site]
    top, left = rng.integers(0, JITTER + 1, 2)
    image = scene(site)[top : top + CANVAS, left : left + CANVAS].copy()

    tilt, squash = recipe["view"]
    size = tuple(min(0.9, s / difficulty**0.5) for s in SIZE)
    mask = marker(label, rng, sources, size, tilt * difficulty, squash**difficulty)
    # Solid paint (not a shift of the ground's texture, which the blur and noise would erase), lighter or
    # darker than the ground under it, whichever the ground leaves room for.
    under = image[mask > 0.5].mean(0)
    contrast = recipe["contrast"] / difficulty * rng.uniform(0.85, 1.15)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if not 0 <= under.mean() + sign * contrast <= 255:
        sign = -sign
    image = image * (1 - mask[..., None]) + np.clip(under + sign * contrast, 0, 255) * mask[..., None]
    if rng.random() < min(0.95, recipe["occlusion"] * difficulty):
        cover, colour = occluder(mask, rng, ir=recipe["look"] == "ir")
        image = image * (1 - cover[..., None]) + colour * cover[..., None]

    noise = recipe["noise"] * difficulty
    if recipe["look"] == "ir":  # one grey channel: the sensor sees no colour, the post's included
        rows, cols = np.mgrid[0:CANVAS, 0:CANVAS] / CANVAS
        cy, cx, strength = recipe["glare"]
        cy, cx = cy + rng.normal(0, 0.05), cx + rng.normal(0, 0.05)
        grey = image.mean(2) + strength * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / 0.03)  # lamp hot spot
        grey = grey * (1 - recipe["vignette"] * 2 * ((rows - 0.5) ** 2 + (cols - 0.5) ** 2))
        return np.repeat((grey + rng.normal(0, noise, grey.shape))[..., None], 3, axis=2)
    if recipe["look"] == "dusk":
        image = motion_blur(image, rng.uniform(0.5, 1) * recipe["blur"] * difficulty, rng.uniform(0, np.pi))
    else:
        image = blades(image, rng, int(recipe["blades"] * difficulty))
    return image + rng.normal(0, noise, image.shape)
