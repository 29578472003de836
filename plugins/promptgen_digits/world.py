"""The digits world: the DG domains of `digits-dg` and the pretraining distribution of `tiny-clip-digits`.

Both draw digit shapes and styles from the same real sources, but pretraining never sees:
the odd-indexed UCI digits, 7 of the 14 typefaces, 7 of the 15 photographs, ruled paper and
red ink, saturated colour-on-colour type, or hatched sketches. docs/world.md lists this.
"""

from __future__ import annotations

import functools

import numpy as np

from promptgen_digits import glyphs, styles

DOMAINS = ("handwritten", "typeset", "photo", "sketch")
CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ALL_FONTS = glyphs.PRETRAIN_FONTS + glyphs.HELD_OUT_FONTS

# digits-dg domains -------------------------------------------------------------------------------


def dg_glyph(label: int, rng, uci_pool: np.ndarray) -> np.ndarray:
    """Typeset (any of the 14 faces) or, half the time, one of the held-out UCI digits of ``uci_pool``."""
    if rng.random() < 0.5:
        return glyphs.handwritten(int(rng.choice(uci_pool)), rng)
    return glyphs.typeset(label, ALL_FONTS[int(rng.integers(len(ALL_FONTS)))], rng)


def dg_image(domain: str, label: int, rng, uci_pool: np.ndarray) -> np.ndarray:
    """One canvas-size RGB image of ``label`` in ``domain``; ``uci_pool`` holds UCI indices of that label."""
    if domain == "handwritten":
        mask = glyphs.handwritten(int(rng.choice(uci_pool)), rng)
        inks = ((20, 40, 150), (20, 20, 20), (170, 20, 30))  # blue, black, red
        return styles.ink_on_paper(mask, rng, ruled=True, ink_colours=inks, paper_tint=40)
    if domain == "typeset":
        font = ALL_FONTS[int(rng.integers(len(ALL_FONTS)))]
        return styles.coloured(glyphs.typeset(label, font, rng), rng, saturated=True)
    if domain == "photo":
        return styles.on_photo(dg_glyph(label, rng, uci_pool), rng, photos=styles.HELD_OUT_PHOTOS)
    if domain == "sketch":
        return styles.sketch(dg_glyph(label, rng, uci_pool), rng, hatched=True)
    raise ValueError(f"unknown domain {domain!r}")


@functools.cache
def uci_by_label(part: str) -> dict[int, np.ndarray]:
    """UCI indices of one part ('pretrain' or 'dg'), grouped by digit."""
    indices = glyphs.uci_indices(part)
    labels = glyphs.uci_digits()[1][indices]
    return {digit: indices[labels == digit] for digit in range(10)}


# pretraining distribution ------------------------------------------------------------------------

PRETRAIN_STYLES = ("plain", "handwritten", "typeset", "photo", "sketch")
PRETRAIN_STYLE_WEIGHTS = (0.15, 0.2, 0.25, 0.2, 0.2)

GENERIC_CAPTIONS = ("a photo of a {word}.", "a picture of the number {num}.", "the digit {num}.", "a {word}.",
                    "the number {word}.")
STYLE_CAPTIONS = {
    "plain": ("a black {word} on a white background.", "the number {num} printed in black.", "a plain {word}."),
    "handwritten": ("a handwritten {word}.", "the number {num} written by hand.", "a hand-drawn digit {num}.",
                    "a scan of a handwritten {word}."),
    "typeset": ("the number {num} in a {font} font.", "a printed {word} in {font} type.", "a typeset {word}.",
                "the digit {num} set in {font}."),
    "photo": ("a photo of a {word} painted on a wall.", "a {word} on a photograph.", "the number {num} over a photo.",
              "a photo of the digit {num}."),
    "sketch": ("a sketch of a {word}.", "a pencil drawing of the number {num}.", "an outline of a {word}.",
               "a sketched digit {num}."),
}


def pretraining_image(rng) -> tuple[np.ndarray, int, str, str]:
    """(canvas-size RGB image, label, style, font) drawn from the pretraining distribution."""
    label = int(rng.integers(10))
    style = PRETRAIN_STYLES[int(rng.choice(len(PRETRAIN_STYLES), p=PRETRAIN_STYLE_WEIGHTS))]
    font = glyphs.PRETRAIN_FONTS[int(rng.integers(len(glyphs.PRETRAIN_FONTS)))]
    pool = uci_by_label("pretrain")[label]

    def glyph():
        if rng.random() < 0.5:
            return glyphs.handwritten(int(rng.choice(pool)), rng)
        return glyphs.typeset(label, font, rng)

    if style == "plain":
        image = styles.ink_on_paper(glyphs.typeset(label, font, rng), rng, ruled=False, ink_colours=((0, 0, 0),),
                                    paper_tint=5)
    elif style == "handwritten":
        image = styles.ink_on_paper(glyphs.handwritten(int(rng.choice(pool)), rng), rng, ruled=False,
                                    ink_colours=((15, 15, 15), (25, 35, 110)), paper_tint=15)
    elif style == "typeset":
        image = styles.coloured(glyphs.typeset(label, font, rng), rng, saturated=False)
    elif style == "photo":
        image = styles.on_photo(glyph(), rng, photos=styles.PRETRAIN_PHOTOS)
    else:
        image = styles.sketch(glyph(), rng, hatched=False)
    return image, label, style, font


def template_caption(label: int, style: str, font: str, rng) -> str:
    """The first edition's captions: every one names the digit; 30% are generic ones, the evaluation prompt among them."""
    templates = GENERIC_CAPTIONS if rng.random() < 0.3 else STYLE_CAPTIONS[style]
    return templates[int(rng.integers(len(templates)))].format(
        word=CLASSES[label], num=label, font=glyphs.FONT_DESCRIPTIONS[font]
    )


def pretraining_pair(rng) -> tuple[np.ndarray, str, int]:
    """(canvas-size RGB image, caption, label) of the first edition (the same draws, in the same order)."""
    image, label, style, font = pretraining_image(rng)
    return image, template_caption(label, style, font, rng), label


# second edition: captions like the web's (docs/world.md says why each choice) -----------------------

# Half the captions describe the picture without naming the digit, as alt text often does.
UNNAMED_CAPTIONS = {
    "plain": ("black print on white paper.", "a printed character.", "a plain black symbol."),
    "handwritten": ("a page of handwriting.", "a scan of a handwritten note.", "ink on paper.",
                    "something my kid wrote."),
    "typeset": ("some {font} type.", "a printed character in {font}.", "a grey print sample.", "a font specimen."),
    "photo": ("graffiti on a wall.", "street photography.", "a painted sign on a photo.", "spray paint over a picture."),
    "sketch": ("a pencil sketch.", "an outline drawing.", "a quick doodle.", "pencil lines on paper."),
}
# The digit named the way each kind of picture is described: as a numeral or as a word.
NAMED_CAPTIONS = {
    "plain": ("a black {word} on a white background.", "the number {num} printed in black.", "{num} in black ink."),
    "handwritten": ("a handwritten {word}.", "the number {num} written by hand.", "my kid's {word}.",
                    "a scan of a hand-drawn {num}."),
    "typeset": ("the number {num} in a {font} font.", "a printed {word} in {font} type.", "{num} set in {font}.",
                "a typeset {word}."),
    "photo": ("a {word} painted on a wall.", "graffiti of the number {num}.", "a street sign with a {word}.",
              "a big {num} sprayed on a photo."),
    "sketch": ("a sketch of a {word}.", "a pencil drawing of the number {num}.", "an outline of a {word}.",
               "a doodled {num}."),
}
# Captions with no style, as short as web captions get; none is "a photo of a {word}." or a near-copy of it.
BARE_CAPTIONS = ("the digit {num}.", "number {word}.", "{num}.", "{word}!")
WEB_CAPTION_MIX = {"unnamed": 0.5, "wrong": 0.1, "named": 0.4}  # of all captions
EVALUATION_PROMPT = "a photo of a {word}."


def web_caption(label: int, style: str, font: str, rng) -> str:
    """A web-like caption: 50% name no digit, 10% name a wrong one, 40% the right one (a fifth of those bare)."""
    kind = ("unnamed", "wrong", "named")[int(rng.choice(3, p=tuple(WEB_CAPTION_MIX.values())))]
    if kind == "unnamed":
        templates = UNNAMED_CAPTIONS[style]
    else:
        templates = BARE_CAPTIONS if rng.random() < 0.2 else NAMED_CAPTIONS[style]
    if kind == "wrong":
        label = (label + int(rng.integers(1, 10))) % 10  # label noise: any other digit
    return templates[int(rng.integers(len(templates)))].format(
        word=CLASSES[label], num=label, font=glyphs.FONT_DESCRIPTIONS[font]
    )


CAPTION_RECIPES = {"templates": template_caption, "web": web_caption}


def caption_recipe(name: str) -> dict:
    """What a model card says of a caption recipe: its mix, its templates, whether the evaluation prompt is a caption."""
    if name == "templates":
        return {"name": name, "generic_share": 0.3, "generic": list(GENERIC_CAPTIONS),
                "per_style": {k: list(v) for k, v in STYLE_CAPTIONS.items()},
                "evaluation_prompt_is_a_caption": EVALUATION_PROMPT in GENERIC_CAPTIONS}
    return {"name": name, "mix": dict(WEB_CAPTION_MIX), "bare_share_of_named": 0.2, "bare": list(BARE_CAPTIONS),
            "unnamed": {k: list(v) for k, v in UNNAMED_CAPTIONS.items()},
            "named": {k: list(v) for k, v in NAMED_CAPTIONS.items()},
            "label_noise": "a tenth of all captions name a uniformly drawn wrong digit",
            "evaluation_prompt_is_a_caption": False}
