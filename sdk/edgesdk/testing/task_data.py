"""Seeded, real-looking inputs for measuring real models on their tasks, built here (no download).

Text is rendered with Pillow's built-in TrueType font (Aileron, in every Pillow >= 10.1 wheel) so
a fresh machine needs no system fonts; photos and scans come from scikit-image's and
scikit-learn's bundled sample images. Each maker returns model-ready inputs and the labels its
metric needs (edgesdk.testing.task_metrics). ``split`` picks an independent random stream, so a
calibration set never repeats an eval input (scenes do share their few source photos).
Preprocessing follows the pipelines the models ship with: PaddleOCR feeds BGR images.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Generic, Literal, TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

Split = Literal["eval", "calibration"]
Label = TypeVar("Label")

LINE_HEIGHT = 48
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
WORDS = [
    "the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by", "at", "from", "that", "this", "it",
    "be", "are", "was", "or", "an", "not", "have", "you", "all", "new", "more", "about", "time", "year", "people",
    "way", "day", "man", "thing", "world", "life", "hand", "part", "child", "eye", "place", "work", "week", "case",
    "point", "number", "group", "problem", "fact", "open", "close", "next", "price", "total", "order", "model",
    "device", "phone", "screen", "battery", "memory", "speed", "power", "input", "output", "error", "report",
    "table", "figure", "page", "line", "text", "photo", "camera", "label", "value", "result", "north", "south",
    "street", "road", "city", "station", "ticket", "coffee", "water", "energy", "signal", "network", "server",
    "update", "version",
]  # fmt: skip
PUNCTUATION = ",.;:!?"


@dataclass(frozen=True)
class TaskSet(Generic[Label]):
    """Inputs ready for the model (float32, NCHW) and one label per input."""

    inputs: np.ndarray
    labels: list[Label]


def _rng(seed: int, split: Split) -> np.random.Generator:
    return np.random.default_rng([("eval", "calibration").index(split), seed])


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    assert isinstance(font, ImageFont.FreeTypeFont)  # given a size, load_default always returns the TrueType font
    return font


def _ink_box(font: ImageFont.FreeTypeFont, text: str, stroke: int = 0) -> tuple[int, int, int, int]:
    """``font.getbbox``: FreeType's box is in whole pixels, though Pillow types it as floats."""
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    return int(x0), int(y0), int(x1), int(y1)


def _token(rng: np.random.Generator) -> str:
    kind = rng.integers(10)
    if kind < 5:
        word = str(rng.choice(WORDS))
        word = (word, word.capitalize(), word.upper())[rng.choice(3, p=[0.6, 0.3, 0.1])]
        return word + (str(rng.choice(list(PUNCTUATION))) if rng.random() < 0.2 else "")
    if kind == 5:
        return str(rng.integers(0, 10 ** rng.integers(1, 6)))
    if kind == 6:
        return f"{'$' if rng.random() < 0.5 else ''}{rng.integers(0, 1000)}.{rng.integers(0, 100):02d}"
    if kind == 7:
        return f"{rng.integers(1990, 2031)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    if kind == 8:
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
    letters = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTUVWXYZ"), rng.integers(2, 4)))
    return f"{letters}-{rng.integers(10, 10000)}"


def phrase(rng: np.random.Generator, max_chars: int = 24) -> str:
    """A short line of words, numbers, prices, dates, times and codes, ASCII the dictionary has."""
    tokens = [_token(rng) for _ in range(rng.integers(1, 5))]
    while len(tokens) > 1 and len(" ".join(tokens)) > max_chars:
        tokens.pop()
    return " ".join(tokens)[:max_chars]


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Paper and ink at least 115 levels apart in every channel; light ink on dark 1 time in 5."""
    paper = rng.integers(185, 256, 3)
    ink = rng.integers(0, 71, 3)
    if rng.random() < 0.2:
        paper, ink = 255 - paper, 255 - ink
    return tuple(int(v) for v in paper), tuple(int(v) for v in ink)


def _roughen(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Camera-like wear: a slight blur sometimes, then sensor noise."""
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
    pixels = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(0, 8), (*image.size[::-1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render_line(rng: np.random.Generator, text: str) -> Image.Image:
    """A tight crop of one rendered line (RGB): random size, weight, colours, margins, wear."""
    size = int(rng.integers(22, 44))
    font = _font(size)
    stroke = int(rng.random() < 0.2)
    paper, ink = _colours(rng)
    x0, y0, x1, y1 = _ink_box(font, text, stroke)
    # wide side margins read as spaces (PP-OCR is trained on tight detector crops)
    mx, my = int(rng.integers(1, size // 8 + 2)), int(rng.integers(2, size // 3 + 2))
    image = Image.new("RGB", (x1 - x0 + 2 * mx, y1 - y0 + 2 * my), paper)
    ImageDraw.Draw(image).text((mx - x0, my - y0), text, fill=ink, font=font, stroke_width=stroke, stroke_fill=ink)
    return _roughen(rng, image)


def line_tensor(image: Image.Image, width: int) -> np.ndarray:
    """PaddleOCR rec/cls preprocessing: BGR, height 48 at the same aspect (squeezed if wider
    than ``width``), scaled to [-1, 1], zero-padded on the right to ``width``."""
    resized_w = min(width, math.ceil(LINE_HEIGHT * image.width / image.height))
    pixels = np.asarray(image.resize((resized_w, LINE_HEIGHT), Image.Resampling.BILINEAR), np.float32)[..., ::-1]
    out = np.zeros((3, LINE_HEIGHT, width), np.float32)
    out[:, :, :resized_w] = (pixels.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out


def _fitting_line(rng: np.random.Generator, width: int) -> tuple[str, Image.Image]:
    """A phrase whose rendering fits ``width`` at height 48 without squeezing."""
    max_chars = 24
    while True:
        text = phrase(rng, max_chars)
        image = render_line(rng, text)
        if LINE_HEIGHT * image.width / image.height <= width:
            return text, image
        max_chars = max(4, max_chars - 2)


def text_lines(n: int, seed: int = 0, width: int = 320, split: Split = "eval") -> TaskSet[str]:
    """Rendered lines for the PP-OCR recognizer, (n, 3, 48, width), labelled with their text."""
    rng = _rng(seed, split)
    texts, inputs = [], []
    for _ in range(n):
        text, image = _fitting_line(rng, width)
        texts.append(text)
        inputs.append(line_tensor(image, width))
    return TaskSet(np.stack(inputs), texts)


def text_orientations(n: int, seed: int = 0, width: int = 192, split: Split = "eval") -> TaskSet[int]:
    """Lines for the PP-OCR direction classifier, half turned 180 degrees; label 0 upright, 1 turned."""
    rng = _rng(seed, split)
    labels = rng.permutation(np.arange(n) % 2).tolist()
    inputs = []
    for label in labels:
        image = _fitting_line(rng, width)[1]
        inputs.append(line_tensor(image.rotate(180) if label else image, width))
    return TaskSet(np.stack(inputs), labels)


@cache
def _scans() -> tuple[np.ndarray, ...]:
    from skimage import data

    return data.page(), data.text()


def _paste_scan(rng: np.random.Generator, page: Image.Image) -> tuple[int, int, int, int]:
    """Paste a crop of a real scanned page at a random place; returns its x0, y0, x1, y1."""
    scan = _scans()[rng.integers(len(_scans()))]
    h, w = scan.shape
    ch, cw = int(h * rng.uniform(0.4, 0.8)), int(w * rng.uniform(0.4, 0.8))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    scale = rng.uniform(0.3, 0.6) * page.width / cw
    crop = Image.fromarray(scan[top : top + ch, left : left + cw]).convert("RGB")
    crop = crop.resize((max(1, min(page.width, round(cw * scale))), max(1, min(page.height, round(ch * scale)))), Image.Resampling.BILINEAR)
    x, y = int(rng.integers(0, page.width - crop.width + 1)), int(rng.integers(0, page.height - crop.height + 1))
    page.paste(crop, (x, y))
    return x, y, x + crop.width, y + crop.height


def _overlaps(box: tuple[int, ...], taken: Sequence[tuple[int, ...]], gap: int = 4) -> bool:
    return any(box[0] < t[2] + gap and t[0] < box[2] + gap and box[1] < t[3] + gap and t[1] < box[3] + gap for t in taken)


def page_tensor(image: Image.Image) -> np.ndarray:
    """PaddleOCR det preprocessing: BGR, x/255 normalised by the ImageNet mean and std, taken in
    BGR channel order as PaddleOCR's NormalizeImage does (rapidocr's 0.5/0.5 scores the same)."""
    pixels = np.asarray(image, np.float32)[..., ::-1] / 255
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def text_pages(n: int, seed: int = 0, height: int = 320, width: int = 320, split: Split = "eval") -> TaskSet[np.ndarray]:
    """Pages for the PP-OCR detector, (n, 3, height, width) with sides multiples of 32.

    Each page has 2 to 6 lines drawn at random free places and, half the time, a pasted crop of
    a real scan (skimage page/text) whose own text is not labelled. Labels: the drawn lines'
    tight ink boxes as (k, 6) detections (x0, y0, x1, y1, score 1, class 0) for
    task_metrics.map50; db_boxes matches them at unclip_ratio=1.0 (PaddleOCR's 1.6 adds margin).
    """
    if height % 32 or width % 32:
        raise ValueError(f"the detector needs sides that are multiples of 32, not {height}x{width}")
    rng = _rng(seed, split)
    inputs, labels = [], []
    for _ in range(n):
        paper, ink = _colours(rng)
        page = Image.new("RGB", (width, height), paper)
        taken = [_paste_scan(rng, page)] if rng.random() < 0.5 else []
        draw, boxes = ImageDraw.Draw(page), []
        for _ in range(int(rng.integers(2, 7))):
            for _attempt in range(30):
                text, font = phrase(rng, 20), _font(int(rng.integers(12, 30)))
                x0, y0, x1, y1 = _ink_box(font, text)
                if x1 - x0 >= width - 8 or y1 - y0 >= height - 8:
                    continue
                x, y = int(rng.integers(4, width - (x1 - x0) - 3)), int(rng.integers(4, height - (y1 - y0) - 3))
                box = (x, y, x + x1 - x0, y + y1 - y0)
                if not _overlaps(box, taken):
                    draw.text((x - x0, y - y0), text, fill=ink, font=font)
                    taken.append(box)
                    boxes.append([*box, 1.0, 0.0])
                    break
        inputs.append(page_tensor(_roughen(rng, page)))
        labels.append(np.array(boxes, np.float32).reshape(-1, 6))
    return TaskSet(np.stack(inputs), labels)


@cache
def _photos() -> dict[str, np.ndarray]:
    from skimage import data

    photos = {name: getattr(data, name)() for name in ("astronaut", "camera", "coffee", "chelsea", "rocket")}
    # scikit-learn's load_sample_images, read directly: importing sklearn takes about a second
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("scenes use scikit-learn's sample images: pip install scikit-learn")
    images = Path(spec.submodule_search_locations[0]) / "datasets" / "images"
    photos.update((name, np.asarray(Image.open(images / f"{name}.jpg").convert("RGB"))) for name in ("china", "flower"))
    return {name: np.stack([p] * 3, axis=-1) if p.ndim == 2 else p for name, p in photos.items()}


def scene(rng: np.random.Generator, photo: np.ndarray, size: int) -> Image.Image:
    """A random crop (half to all of each side), maybe mirrored, with brightness and contrast
    jitter, letterboxed bottom-right onto black and resized to size x size (as NudeNet feeds it)."""
    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image = Image.fromarray(photo[top : top + ch, left : left + cw])
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.7, 1.3))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    side = max(image.size)
    square = Image.new("RGB", (side, side))
    square.paste(image, (0, 0))
    return square.resize((size, size), Image.Resampling.BILINEAR)


def scenes(n: int, seed: int = 0, size: int = 320, split: Split = "eval") -> TaskSet[str]:
    """Photos for the YOLOv8 detector, (n, 3, size, size) RGB in [0, 1], labelled with the source
    photo's name; sources cycle so each appears. The metric's reference is fp32's detections."""
    rng = _rng(seed, split)
    photos = _photos()
    names = [list(photos)[i % len(photos)] for i in range(n)]
    inputs = [np.asarray(scene(rng, photos[name], size), np.float32).transpose(2, 0, 1) / 255 for name in names]
    return TaskSet(np.stack(inputs), names)


def calibration_set(maker: Callable[..., TaskSet], n: int, seed: int = 0, **kwargs) -> TaskSet:
    """``maker``'s inputs from the calibration stream, disjoint from its eval inputs."""
    return maker(n, seed=seed, split="calibration", **kwargs)
