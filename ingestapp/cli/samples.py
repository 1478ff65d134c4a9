"""A small, deterministic set of sample media exercising every pipeline stage.

:func:`write_samples` writes (overwriting, byte-identical on every run) under ``directory``::

    camera/beach_sunset.jpg     1600x1200, EXIF: Canon EOS R6 + RF24-105mm, 2023-12-28 19:42:10-03:00,
                                1/250 s, f/8, ISO 100, 35 mm; GPS Rio de Janeiro (south/west), 710 m
    camera/alpine_portrait.jpg  1200x900 stored with Orientation 6 (displayed 900x1200); Nikon Z 6,
                                GPS Zermatt (north/east), 1620 m; no OffsetTimeOriginal
    camera/dead_sea.jpg         1024x768, Sony ILCE-7M3, GPS Dead Sea shore, 430 m *below* sea level
    camera/night_street.jpg     800x600, Fujifilm X-T4, 1/30 s, f/1.4, ISO 6400, no GPS
    tagged/owl.jpg              embedded XMP: dc:subject, lr:hierarchicalSubject, xmp:Rating 4
    tagged/harbour.jpg          IPTC IIM 2:25 keywords (UTF-8, written with iptcinfo3)
    tagged/forest.jpg           sidecars forest.jpg.xmp (dc:subject, Rating 5) and forest.xmp
                                (digiKam:TagsList)
    tagged/mountain.jpg         sidecars mountain.txt (comma-separated tags), mountain.json (score)
    tagged/scores.csv           ``filename,score`` rows for owl.jpg and harbour.jpg
    graphics/diagram.png        800x600 RGBA with transparent areas
    graphics/gradient.png       640x480 grayscale
    video/clip.mp4              2 s, 320x240, 25 fps, H.264 (MPEG-4 Part 2 if libx264 is missing),
                                creation_time 2024-06-01T09:15:00Z
    corrupt.jpg                 a JPEG cut off in the middle of its scan data (the one bad file)

Images are procedural (gradients and shapes from a seeded RNG), so the whole set is written in
well under a second and needs no network or bundled binaries.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from xml.sax.saxutils import escape

import av
import numpy as np
from iptcinfo3 import IPTCInfo
from PIL import ExifTags, Image, ImageDraw
from PIL.TiffImagePlugin import IFDRational

_Base = ExifTags.Base
_GPS = ExifTags.GPS


@dataclass(frozen=True)
class Shot:
    """Camera settings written as EXIF (EXIF 2.32 tags; GPS as decimal degrees / metres)."""

    make: str
    model: str
    taken: str  # "YYYY:MM:DD HH:MM:SS"
    exposure: Fraction  # seconds
    f_number: Fraction
    iso: int
    focal_mm: Fraction
    lens: str | None = None
    offset: str | None = None  # "+HH:MM"
    orientation: int = 1
    gps: tuple[float, float, float] | None = None  # latitude, longitude, altitude (m)


def write_samples(directory: Path) -> list[Path]:
    """Write the sample set under ``directory`` (created if needed); return the media paths.

    The sample files are (re)written with identical bytes each time; other files are left alone.
    Sidecars (``.xmp``, ``.txt``, ``.json``, ``scores.csv``) are written too but not returned.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("camera", "tagged", "graphics", "video"):
        (directory / sub).mkdir(exist_ok=True)
    return [
        *_camera_photos(directory / "camera"),
        *_tagged_photos(directory / "tagged"),
        *_graphics(directory / "graphics"),
        _video(directory / "video" / "clip.mp4"),
        _corrupt_jpeg(directory / "corrupt.jpg"),
    ]


# --- camera photos with EXIF --------------------------------------------------------------


RGB = tuple[int, int, int]

#: (file name, stored size in px, (sky, ground) colours, camera settings)
_CAMERA_SHOTS: list[tuple[str, tuple[int, int], tuple[RGB, RGB], Shot]] = [
    (
        "beach_sunset.jpg",
        (1600, 1200),
        ((250, 120, 60), (40, 30, 90)),
        Shot(
            make="Canon",
            model="Canon EOS R6",
            lens="RF24-105mm F4 L IS USM",
            taken="2023:12:28 19:42:10",
            offset="-03:00",
            exposure=Fraction(1, 250),
            f_number=Fraction(8),
            iso=100,
            focal_mm=Fraction(35),
            gps=(-22.951916, -43.210487, 710.0),
        ),
    ),
    (
        "alpine_portrait.jpg",
        (900, 1200),
        ((120, 170, 230), (235, 240, 245)),
        Shot(
            make="NIKON CORPORATION",
            model="NIKON Z 6",
            lens="NIKKOR Z 24-70mm f/4 S",
            taken="2022:08:14 07:05:33",
            exposure=Fraction(1, 500),
            f_number=Fraction(11),
            iso=200,
            focal_mm=Fraction(50),
            orientation=6,
            gps=(45.9763, 7.6586, 1620.0),
        ),
    ),
    (
        "dead_sea.jpg",
        (1024, 768),
        ((180, 200, 220), (60, 120, 140)),
        Shot(
            make="SONY",
            model="ILCE-7M3",
            taken="2021:03:02 11:20:00",
            offset="+02:00",
            exposure=Fraction(1, 1000),
            f_number=Fraction(56, 10),
            iso=100,
            focal_mm=Fraction(24),
            gps=(31.559, 35.4732, -430.0),
        ),
    ),
    (
        "night_street.jpg",
        (800, 600),
        ((10, 10, 40), (80, 40, 20)),
        Shot(
            make="FUJIFILM",
            model="X-T4",
            taken="2020:11:20 22:48:05",
            offset="+09:00",
            exposure=Fraction(1, 30),
            f_number=Fraction(14, 10),
            iso=6400,
            focal_mm=Fraction(23),
        ),
    ),
]


def _camera_photos(folder: Path) -> list[Path]:
    written = []
    for seed, (name, size, (top, bottom), shot) in enumerate(_CAMERA_SHOTS):
        image = _scene(size, top, bottom, seed=seed)
        if shot.orientation == 6:
            # Store the pixels as a sideways sensor would; viewers turn them 90° clockwise back.
            image = image.transpose(Image.Transpose.ROTATE_90)
        path = folder / name
        image.save(path, quality=88, exif=_exif(shot))
        written.append(path)
    return written


def _exif(shot: Shot) -> Image.Exif:
    exif = Image.Exif()
    exif[_Base.Make], exif[_Base.Model], exif[_Base.Orientation] = shot.make, shot.model, shot.orientation
    exif[_Base.Software] = "ingestapp samples"
    ifd = exif.get_ifd(ExifTags.IFD.Exif)
    ifd[_Base.DateTimeOriginal] = ifd[_Base.DateTimeDigitized] = shot.taken
    if shot.offset:
        ifd[_Base.OffsetTimeOriginal] = shot.offset
    ifd[_Base.ExposureTime] = _rational(shot.exposure)
    ifd[_Base.FNumber] = _rational(shot.f_number)
    ifd[_Base.ISOSpeedRatings] = shot.iso
    ifd[_Base.FocalLength] = _rational(shot.focal_mm)
    if shot.lens:
        ifd[_Base.LensModel] = shot.lens
    if shot.gps:
        _gps_ifd(exif.get_ifd(ExifTags.IFD.GPSInfo), *shot.gps)
    return exif


def _gps_ifd(gps: dict[int, object], latitude: float, longitude: float, altitude: float) -> None:
    """EXIF 2.32 §4.6.6: unsigned DMS rationals plus N/S, E/W and above/below-sea-level refs."""
    gps[_GPS.GPSVersionID] = b"\x02\x03\x00\x00"
    gps[_GPS.GPSLatitudeRef] = "S" if latitude < 0 else "N"
    gps[_GPS.GPSLatitude] = _dms(abs(latitude))
    gps[_GPS.GPSLongitudeRef] = "W" if longitude < 0 else "E"
    gps[_GPS.GPSLongitude] = _dms(abs(longitude))
    gps[_GPS.GPSAltitudeRef] = b"\x01" if altitude < 0 else b"\x00"
    gps[_GPS.GPSAltitude] = _rational(Fraction(abs(altitude)).limit_denominator(100))


def _dms(degrees: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    whole = int(degrees)
    minutes = int((degrees - whole) * 60)
    seconds = Fraction(round((degrees - whole - minutes / 60) * 3600 * 10000), 10000)
    return IFDRational(whole, 1), IFDRational(minutes, 1), _rational(seconds)


def _rational(value: Fraction) -> IFDRational:
    return IFDRational(value.numerator, value.denominator)


# --- photos with keywords, ratings and scores ---------------------------------------------


def _tagged_photos(folder: Path) -> list[Path]:
    owl = folder / "owl.jpg"
    _scene((960, 720), (90, 70, 50), (200, 180, 140), seed=10).save(
        owl,
        quality=85,
        xmp=_xmp_packet(
            subjects=["owl", "bird", "night"],
            hierarchical=["Animals|Birds|Owl", "Places|Forest"],
            rating="4",
        ),
    )

    harbour = folder / "harbour.jpg"
    _scene((1280, 960), (150, 200, 240), (20, 60, 110), seed=11).save(harbour, quality=85)
    _write_iptc_keywords(harbour, ["harbour", "boats", "Möwe", "sea"])

    forest = folder / "forest.jpg"
    _scene((800, 1200), (30, 90, 40), (150, 200, 120), seed=12).save(forest, quality=85)
    (folder / "forest.jpg.xmp").write_bytes(_xmp_packet(subjects=["forest", "trees", "green"], rating="5"))
    (folder / "forest.xmp").write_bytes(_xmp_packet(tags_list=["Nature/Forest/Pine", "Seasons/Autumn"]))

    mountain = folder / "mountain.jpg"
    _scene((1400, 1050), (200, 210, 230), (90, 80, 100), seed=13).save(mountain, quality=85)
    (folder / "mountain.txt").write_text("mountain, snow, hiking,  summit\n", encoding="utf-8")
    (folder / "mountain.json").write_text(json.dumps({"score": 0.91, "model": "demo-aesthetic"}), "utf-8")

    (folder / "scores.csv").write_text("filename,score\nowl.jpg,0.82\nharbour.jpg,0.47\n", encoding="utf-8")
    return [owl, harbour, forest, mountain]


def _xmp_packet(
    subjects: list[str] | None = None,
    hierarchical: list[str] | None = None,
    tags_list: list[str] | None = None,
    rating: str | None = None,
) -> bytes:
    """A minimal XMP packet (XMP Part 1 §7.3 RDF/XML) with the properties the pipeline reads."""

    def bag(prop: str, values: list[str] | None) -> str:
        if not values:
            return ""
        items = "".join(f"<rdf:li>{escape(value)}</rdf:li>" for value in values)
        return f"<{prop}><rdf:Bag>{items}</rdf:Bag></{prop}>"

    rating_attribute = f' xmp:Rating="{escape(rating)}"' if rating is not None else ""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:lr="http://ns.adobe.com/lightroom/1.0/"'
        f' xmlns:digiKam="http://www.digikam.org/ns/1.0/"{rating_attribute}>'
        f"{bag('dc:subject', subjects)}{bag('lr:hierarchicalSubject', hierarchical)}"
        f"{bag('digiKam:TagsList', tags_list)}"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def _write_iptc_keywords(path: Path, keywords: list[str]) -> None:
    """Add an IPTC IIM block (Photoshop APP13) with 2:25 keywords, keeping EXIF/XMP intact."""
    info = IPTCInfo(str(path), force=True, inp_charset="utf_8", out_charset="utf_8")
    info["keywords"] = keywords
    info.save()
    path.with_name(path.name + "~").unlink(missing_ok=True)  # iptcinfo3 leaves a backup copy


# --- graphics, video, corrupt file --------------------------------------------------------


def _graphics(folder: Path) -> list[Path]:
    diagram = folder / "diagram.png"
    canvas = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, colour in enumerate([(220, 60, 60, 255), (60, 160, 90, 255), (50, 90, 200, 200)]):
        draw.rounded_rectangle((60 + i * 240, 120, 230 + i * 240, 480), radius=24, fill=colour)
    draw.line((60, 520, 740, 520), fill=(30, 30, 30, 255), width=6)
    canvas.save(diagram, optimize=True)

    gradient = folder / "gradient.png"
    ramp = np.add.outer(np.linspace(0, 127, 480), np.linspace(0, 128, 640)).astype(np.uint8)
    Image.fromarray(ramp, "L").save(gradient)
    return [diagram, gradient]


def _video(path: Path) -> Path:
    """2 s of a ball moving over a gradient; H.264 when available, else MPEG-4 Part 2."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w", format="mp4") as container:
        container.metadata["creation_time"] = "2024-06-01T09:15:00.000000Z"
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.thread_count = 1  # multi-threaded x264 output varies run to run
        background = np.asarray(_scene((320, 240), (20, 40, 80), (200, 120, 40), seed=20))
        for index in range(50):
            frame = Image.fromarray(background.copy())
            x = 20 + index * 5
            ImageDraw.Draw(frame).ellipse((x, 90, x + 60, 150), fill=(250, 230, 80))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _corrupt_jpeg(path: Path) -> Path:
    """A valid JPEG header followed by only part of the scan: decoders report truncation."""
    buffer = io.BytesIO()
    _scene((800, 600), (100, 100, 100), (200, 50, 50), seed=30).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 55 // 100])
    return path


def _scene(size: tuple[int, int], top: RGB, bottom: RGB, *, seed: int) -> Image.Image:
    """A vertical colour gradient with a sun, hills and a few shapes placed by ``seed``."""
    width, height = size
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    pixels = (1 - ramp) * np.array(top) + ramp * np.array(bottom)
    image = Image.fromarray(np.broadcast_to(pixels, (height, width, 3)).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    rng = random.Random(seed)
    radius = rng.randint(height // 12, height // 6)
    cx, cy = rng.randint(radius, width - radius), rng.randint(radius, height // 2)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(255, 230, 150))
    ridge = [(x, int(height * rng.uniform(0.55, 0.8))) for x in range(0, width + 1, width // 8)]
    draw.polygon([(0, height), *ridge, (width, height)], fill=tuple(c // 2 for c in bottom))
    for _ in range(6):
        x, y = rng.randrange(width), rng.randrange(height)
        w, h = rng.randint(width // 20, width // 6), rng.randint(height // 20, height // 6)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.rectangle((x, y, x + w, y + h), outline=colour, width=max(2, width // 200))
    return image
