"""Synthetic sensor images: a fixed star field, sky, dark current, hot pixels, bias and noise.

Speed is the point of the design. A full ASI6200 frame is 61 Mpx; drawing 61 M Gaussian or Poisson
samples per frame would take seconds, yet a real camera delivers one every ~0.3-0.6 s. So:

* Almost every pixel is "background": the same sky + dark signal everywhere, so its distribution is
  the same for all of them (per colour channel). For each such distribution we build, once, a
  *pool* of ready-to-copy output values (noise included, already in the output dtype and bit
  alignment) and assemble a frame by copying row blocks from random offsets of the pool. A frame is
  then essentially one memcpy into the caller's buffer.
* Everything that is not background (stars and hot pixels, a few 10^5 elements at most) is kept as
  a sparse list per geometry (ROI, bin, image type, flip) and computed exactly each frame:
  signal, shot + read noise, saturation, quantisation.

Frames are deterministic: the noise pool depends on the seed, the pool offsets and the sparse noise
on (seed, camera slot, frame number). Nothing here knows about the SDK or about time.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .catalog import CameraModel
from .constants import BYTES_PER_PIXEL, ImgType

__all__ = ["Conditions", "Geometry", "PreparedFrame", "SensorSimulator", "POOL_LEN"]

#: Length of a noise pool. A multiple of 2 and 3 so that Bayer (period 2) and BGR (period 3)
#: patterns stay aligned at any offset that is a multiple of the period.
POOL_LEN = 3 * 2**20
#: Largest block copied from one pool offset; several blocks per frame hide the pool's finite size.
MAX_CHUNK = POOL_LEN // 4

R, G, B, L = 0, 1, 2, 3  # channel ids; L is luminance (mono sensors, MonoBin, Y8)
_CFA = np.array([[R, G], [G, B]], dtype=np.int8)  # RGGB: ASI_BAYER_RG
#: The 2x2 cell at the sensor's origin for each ASI_BAYER_PATTERN (RG, BG, GR, GB).
_CFA_BY_PATTERN = {0: _CFA, 1: np.array([[B, G], [G, R]], dtype=np.int8), 2: np.array([[G, R], [B, G]], dtype=np.int8),
                   3: np.array([[G, B], [R, G]], dtype=np.int8)}
#: Fraction of the (mono-equivalent) signal each CFA filter passes; blue is weak, which is why the
#: SDK's default WB_B (95) is much larger than WB_R (52).
_FILTER = np.array([0.43, 0.45, 0.24, 1.0])
_SKY_E_PER_S_PER_UM2 = 0.1  # mono-equivalent sky background per um^2 of pixel area
_STAR_PRUNE_E_PER_S = 0.02  # footprint elements fainter than this contribute nothing visible
_PSF_RADIUS = 7  # footprint half-width in pixels (> 3.5 sigma for sigma <= 2)

_zpool_cache: OrderedDict[int, np.ndarray] = OrderedDict()
_zpool_lock = threading.Lock()


def _zpool(seed: int) -> np.ndarray:
    """A pool of POOL_LEN standard normal float32 samples for `seed` (shared, built once)."""
    with _zpool_lock:
        z = _zpool_cache.get(seed)
        if z is None:
            z = np.random.default_rng([seed, 0x5EED]).standard_normal(POOL_LEN, dtype=np.float32)
            z.setflags(write=False)
            _zpool_cache[seed] = z
            while len(_zpool_cache) > 2:
                _zpool_cache.popitem(last=False)
        else:
            _zpool_cache.move_to_end(seed)
        return z


def _erf(x: np.ndarray) -> np.ndarray:
    """Vectorised erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7); numpy has none."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t \
        * np.exp(-a * a)
    out: np.ndarray = s * y
    return out


def _phi(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


@dataclass(frozen=True)
class Geometry:
    """What the output array looks like: the ROI (binned pixels), binning, image type and flip."""

    width: int
    height: int
    bin: int
    img_type: int
    start_x: int = 0
    start_y: int = 0
    flip: int = 0
    mono_bin: bool = False

    @property
    def nbytes(self) -> int:
        return self.width * self.height * BYTES_PER_PIXEL[ImgType(self.img_type)]


@dataclass(frozen=True)
class Conditions:
    """Everything physical about one exposure."""

    exposure_s: float
    gain: int
    offset: int
    temperature_c: float
    is_dark: bool = False
    wb_r: int = 52
    wb_b: int = 95


@dataclass
class _StarField:
    n_stars: int
    x: np.ndarray  # sensor pixel coordinates (pixel i spans [i, i+1))
    y: np.ndarray
    flux: np.ndarray  # mono-equivalent e-/s of each star
    colour: np.ndarray  # (n, 4) relative response per channel R, G, B, L
    sigma: np.ndarray
    fx: np.ndarray  # footprint: sensor pixel of each element
    fy: np.ndarray
    fw: np.ndarray  # fraction of the star's flux falling on that pixel
    fstar: np.ndarray
    hx: np.ndarray  # hot pixels
    hy: np.ndarray
    hfactor: np.ndarray  # extra dark current, in multiples of the normal dark current


#: (parity, image type, quantised means, quantised sigmas): frames with equal keys share a noise pool.
_PoolKey = tuple[int, int, tuple[float, ...], tuple[float, ...]]
#: (row parity, first row, rows, offset into the pool) of one bulk copy.
_Chunk = tuple[int, int, int, int]


@dataclass
class _Layout:
    geom: Geometry
    kind: str  # "mono", "bayer", "lum" or "rgb"
    row_len: int  # elements per output row
    patterns: tuple[np.ndarray, np.ndarray]  # channel ids along a row, even and odd rows
    same: bool  # both row parities share one pattern (and so one pool)
    sky: np.ndarray  # mono-equivalent-corrected sky e-/s per channel id
    idx: np.ndarray  # sparse element indices (sorted)
    ch: np.ndarray  # their channel ids
    star: np.ndarray  # star signal e-/s per sparse element (bin-averaged)
    hot: np.ndarray  # hot-pixel extra dark factor per sparse element (bin-averaged)


class PreparedFrame:
    """A frame ready to be written: everything is computed except the final bulk copy."""

    __slots__ = ("geom", "frame_no", "dtype", "nbytes", "_layout", "_pools", "_chunks", "_vals", "stats")

    def __init__(self, geom: Geometry, frame_no: int, dtype: type[np.unsignedinteger[Any]], layout: _Layout,
                 pools: list[np.ndarray], chunks: list[_Chunk], vals: np.ndarray, stats: dict[str, Any]):
        self.geom = geom
        self.frame_no = frame_no
        self.dtype = dtype
        self.nbytes = geom.nbytes
        self._layout = layout
        self._pools = pools
        self._chunks = chunks
        self._vals = vals
        self.stats = stats  # background mean/sigma per channel, native ADU (for tests and docs)

    def render_into(self, address: int) -> None:
        """Write the frame to `nbytes` bytes of memory at `address` (the caller's SDK buffer)."""
        buf = (ctypes.c_ubyte * self.nbytes).from_address(address)
        self.render_array(np.frombuffer(memoryview(buf), dtype=self.dtype))

    def render_array(self, out: np.ndarray) -> None:
        """Write the frame into `out`, a flat C-contiguous array of the frame's dtype and size."""
        lay = self._layout
        rl = lay.row_len
        if lay.same:
            pool = self._pools[0]
            for _q, r0, n, off in self._chunks:
                out[r0 * rl:(r0 + n) * rl] = pool[off:off + n * rl]
        else:
            pairs = out.reshape(self.geom.height // 2, 2, rl)
            for q, r0, n, off in self._chunks:
                np.copyto(pairs[r0:r0 + n, q, :], self._pools[q][off:off + n * rl].reshape(n, rl))
        if lay.idx.size:
            out[lay.idx] = self._vals

    def to_array(self) -> np.ndarray:
        """A freshly allocated image in the shape zwoasi's capture() returns (for tests and tools)."""
        out = np.empty(self.nbytes // np.dtype(self.dtype).itemsize, dtype=self.dtype)
        self.render_array(out)
        shape = (self.geom.height, self.geom.width, 3) if self.geom.img_type == ImgType.RGB24 else \
            (self.geom.height, self.geom.width)
        return out.reshape(shape)


class SensorSimulator:
    """Synthesises the frames of one simulated camera (a model, its slot and the simulator seed).

    Thread-safe: caches are guarded by an internal lock; frame preparation itself needs no lock.
    """

    LAYOUT_CACHE = 8
    POOL_CACHE = 4

    def __init__(self, model: CameraModel, seed: int, slot: int):
        self.model = model
        self._cfa = _CFA_BY_PATTERN[int(model.bayer_pattern)]
        self.seed = int(seed)
        self.slot = int(slot)
        self._lock = threading.Lock()
        self._field: _StarField | None = None
        self._layouts: OrderedDict[Geometry, _Layout] = OrderedDict()
        self._pools: OrderedDict[_PoolKey, np.ndarray] = OrderedDict()
        area = model.pixel_size_um ** 2
        sky_mono = _SKY_E_PER_S_PER_UM2 * area
        self.sky_mono = sky_mono

    # ------------------------------------------------------------------ the fixed scene

    @property
    def field(self) -> _StarField:
        """The camera's fixed star field and hot pixels (built on first use)."""
        with self._lock:
            if self._field is None:
                self._field = self._build_field()
            return self._field

    def star_positions(self, brightest: int = 10) -> list[tuple[float, float, float]]:
        """(x, y, flux e-/s) of the brightest stars in full-sensor pixel coordinates, brightest first."""
        f = self.field
        order = np.argsort(-f.flux)[:brightest]
        return [(float(f.x[i]), float(f.y[i]), float(f.flux[i])) for i in order]

    def hot_pixels(self) -> list[tuple[int, int, float]]:
        """(x, y, extra dark factor) of the fixed hot pixels, in full-sensor coordinates."""
        f = self.field
        return [(int(a), int(b), float(c)) for a, b, c in zip(f.hx, f.hy, f.hfactor, strict=True)]

    def _build_field(self) -> _StarField:
        m = self.model
        rng = np.random.default_rng([self.seed, self.slot, 0x57A2])
        w, h = m.max_width, m.max_height
        n = int(np.clip(25 * m.megapixels + 100, 150, 600))
        x = rng.uniform(10, w - 10, n)
        y = rng.uniform(10, h - 10, n)
        # Power law: many faint stars (~100 e-/s), a few that saturate in seconds (up to 1e6 e-/s).
        flux = np.minimum(100.0 * (1.0 - rng.random(n)) ** (-1.0 / 0.8), 1e6)
        sigma = rng.uniform(1.1, 1.8, n)
        temp = rng.random(n)  # 0 = red star, 1 = blue star
        colour = np.stack([1.3 - 0.6 * temp, np.ones(n), 0.6 + 0.8 * temp, np.ones(n)], axis=1)

        off = np.arange(-_PSF_RADIUS, _PSF_RADIUS + 1)
        ix = np.floor(x).astype(np.int64)[:, None] + off[None, :]
        iy = np.floor(y).astype(np.int64)[:, None] + off[None, :]
        sx = sigma[:, None]
        wx = _phi((ix + 1 - x[:, None]) / sx) - _phi((ix - x[:, None]) / sx)
        wy = _phi((iy + 1 - y[:, None]) / sx) - _phi((iy - y[:, None]) / sx)
        wgt = wy[:, :, None] * wx[:, None, :]  # (n, k, k)
        fx = np.broadcast_to(ix[:, None, :], wgt.shape)
        fy = np.broadcast_to(iy[:, :, None], wgt.shape)
        fs = np.broadcast_to(np.arange(n)[:, None, None], wgt.shape)
        keep = (flux[:, None, None] * wgt >= _STAR_PRUNE_E_PER_S) & (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)

        nh = max(1, int(round(m.hot_pixel_fraction * w * h)))
        hx = rng.integers(0, w, nh)
        hy = rng.integers(0, h, nh)
        hfactor = rng.lognormal(mean=math.log(100.0), sigma=1.0, size=nh)
        return _StarField(n, x, y, flux, colour, sigma,
                          fx[keep].astype(np.int32), fy[keep].astype(np.int32), wgt[keep].astype(np.float32),
                          fs[keep].astype(np.int32), hx.astype(np.int32), hy.astype(np.int32),
                          hfactor.astype(np.float32))

    # ------------------------------------------------------------------ per-geometry layout

    def _kind(self, geom: Geometry) -> str:
        if not self.model.is_color:
            return "mono"
        if geom.img_type == ImgType.RGB24:
            return "rgb"
        if geom.img_type == ImgType.Y8 or (geom.mono_bin and geom.bin > 1):
            return "lum"
        return "bayer"

    def layout(self, geom: Geometry) -> _Layout:
        """The sparse description of `geom` (cached; the few most recent geometries are kept)."""
        with self._lock:
            lay = self._layouts.get(geom)
            if lay is not None:
                self._layouts.move_to_end(geom)
                return lay
        f = self.field
        lay = self._build_layout(geom, f)
        with self._lock:
            self._layouts[geom] = lay
            while len(self._layouts) > self.LAYOUT_CACHE:
                self._layouts.popitem(last=False)
        return lay

    def _build_layout(self, geom: Geometry, f: _StarField) -> _Layout:
        b, w, h = geom.bin, geom.width, geom.height
        x0, y0 = geom.start_x * b, geom.start_y * b
        kind = self._kind(geom)
        k = 3 if kind == "rgb" else 1
        # The mosaic belongs to the sensor: the output's first pixel is the region's first sensor pixel,
        # or its last one along a flipped axis, so flip (and an odd start) shift the pattern delivered.
        px = (geom.start_x + (w - 1 if geom.flip & 1 else 0)) % 2
        py = (geom.start_y + (h - 1 if geom.flip & 2 else 0)) % 2
        out_cfa = np.roll(self._cfa, (-py, -px), axis=(0, 1))
        if kind == "bayer":
            patterns = (out_cfa[0].copy(), out_cfa[1].copy())
        elif kind == "rgb":
            patterns = (np.array([B, G, R], np.int8),) * 2  # BGR in memory, as the SDK delivers
        else:
            patterns = (np.array([L], np.int8),) * 2
        same = patterns[0] is patterns[1] or np.array_equal(patterns[0], patterns[1])

        sky = self.sky_mono * _FILTER.copy()
        if self.model.is_color:
            sky[L] = self.sky_mono * float(_FILTER[R] + 2 * _FILTER[G] + _FILTER[B]) / 4.0
        # Signal through the CFA for a colour sensor; a mono sensor sees the full (L) signal.
        def response(stars: np.ndarray, ch: np.ndarray | None) -> np.ndarray:
            flux: np.ndarray = f.flux[stars]
            if not self.model.is_color:
                return flux
            assert ch is not None  # a colour sensor always knows the channel
            out: np.ndarray = flux * _FILTER[ch] * f.colour[stars, ch]
            return out

        def in_roi(px: np.ndarray, py: np.ndarray) -> np.ndarray:
            return (px >= x0) & (px < x0 + w * b) & (py >= y0) & (py < y0 + h * b)

        def to_out(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            X = (px - x0) // b
            Y = (py - y0) // b
            if geom.flip & 1:
                X = w - 1 - X
            if geom.flip & 2:
                Y = h - 1 - Y
            return X.astype(np.int64), Y.astype(np.int64)

        sel = in_roi(f.fx, f.fy)
        sfx, sfy, swt, sst = f.fx[sel], f.fy[sel], f.fw[sel] / float(b * b), f.fstar[sel]
        X, Y = to_out(sfx, sfy)
        pix = Y * w + X
        sensor_ch = self._cfa[sfy % 2, sfx % 2].astype(np.int64) if self.model.is_color else None

        if kind == "mono":
            elems, rates = pix, swt * response(sst, None)
        elif kind == "bayer":
            och = out_cfa[Y % 2, X % 2].astype(np.int64)
            elems, rates = pix, swt * response(sst, och)
        elif kind == "lum":
            elems, rates = pix, swt * response(sst, sensor_ch)
        else:  # rgb
            parts_e, parts_r = [], []
            for pos, c in enumerate((B, G, R)):
                parts_e.append(pix * 3 + pos)
                parts_r.append(swt * response(sst, np.full(sst.shape, c, np.int64)))
            elems, rates = np.concatenate(parts_e), np.concatenate(parts_r)

        hsel = in_roi(f.hx, f.hy)
        hx, hy, hf = f.hx[hsel], f.hy[hsel], f.hfactor[hsel] / float(b * b)
        HX, HY = to_out(hx, hy)
        hpix = HY * w + HX
        if kind == "rgb":
            pos_of = np.array([2, 1, 0])  # channel id -> position in BGR
            hpix = hpix * 3 + pos_of[self._cfa[hy % 2, hx % 2].astype(np.int64)]

        all_e = np.concatenate([elems, hpix])
        uniq: np.ndarray
        star: np.ndarray  # bincount with weights: float64
        hot: np.ndarray
        if all_e.size:
            uniq, inv = np.unique(all_e, return_inverse=True)
            star = np.bincount(inv, weights=np.concatenate([rates, np.zeros(hpix.size)]), minlength=uniq.size)
            hot = np.bincount(inv, weights=np.concatenate([np.zeros(elems.size), hf]), minlength=uniq.size)
        else:
            uniq = np.zeros(0, np.int64)
            star = hot = np.zeros(0)
        if kind == "bayer":
            ch = out_cfa[(uniq // w) % 2, (uniq % w) % 2]
        elif kind == "rgb":
            ch = np.array([B, G, R], np.int8)[uniq % 3]
        else:
            ch = np.full(uniq.shape, L, np.int8)
        return _Layout(geom, kind, w * k, patterns, bool(same), sky, uniq.astype(np.int64), ch.astype(np.int64),
                       star.astype(np.float64), hot.astype(np.float64))

    # ------------------------------------------------------------------ frames

    def _out_format(self, img_type: int) -> tuple[type[np.unsignedinteger[Any]], int]:
        """(dtype, shift) from native ADU to output: RAW16 is left-aligned, 8-bit keeps the top bits."""
        bd = self.model.bit_depth
        if img_type == ImgType.RAW16:
            return np.uint16, 16 - bd
        return np.uint8, bd - 8

    def _pool(self, key: _PoolKey, mus: np.ndarray, sigmas: np.ndarray, parity: int, img_type: int) -> np.ndarray:
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
        z = _zpool(self.seed)
        if parity:
            z = z[::-1]  # decorrelate odd rows from even rows
        p = len(mus)
        v = np.empty(POOL_LEN, np.float32)
        v2 = v.reshape(-1, p)
        np.multiply(z.reshape(-1, p), sigmas.astype(np.float32), out=v2)
        v2 += mus.astype(np.float32)
        np.rint(v, out=v)
        np.clip(v, 0, self.model.max_adu, out=v)
        dtype, shift = self._out_format(img_type)
        native = v.astype(np.uint16)
        del v, v2
        if dtype is np.uint16:
            np.left_shift(native, shift, out=native)
            pool = native
        else:
            pool = (native >> shift).astype(np.uint8)
        pool.setflags(write=False)
        with self._lock:
            self._pools[key] = pool
            while len(self._pools) > self.POOL_CACHE:
                self._pools.popitem(last=False)
        return pool

    def prepare(self, geom: Geometry, cond: Conditions, frame_no: int) -> PreparedFrame:
        """Compute frame `frame_no` of `geom` under `cond`, leaving only the bulk copy for later."""
        m = self.model
        lay = self.layout(geom)
        t = max(float(cond.exposure_s), 0.0)
        light = 0.0 if cond.is_dark else 1.0
        dark = m.dark_current(cond.temperature_c)
        epadu = m.elec_per_adu(cond.gain)
        rn = m.read_noise_e(cond.gain)
        bias = cond.offset * m.bias_adu_per_offset
        b = geom.bin
        wb = np.ones(4)
        if lay.kind == "rgb":
            wb[R] = cond.wb_r / 50.0
            wb[B] = cond.wb_b / 50.0
        fw = m.full_well_e

        bg_e = np.minimum((lay.sky * light + dark) * t, fw)
        mu_all = bias + bg_e / epadu * wb
        sig_all = np.sqrt(bg_e + rn * rn) / b / epadu * wb
        dtype, shift = self._out_format(geom.img_type)

        pools: list[np.ndarray] = []
        for q in (0, 1) if not lay.same else (0,):
            pat = lay.patterns[q]
            # Quantise so that frames under (almost) the same conditions share one pool.
            mus = np.round(mu_all[pat] * 20.0) / 20.0
            sigs = np.exp(np.round(np.log(np.maximum(sig_all[pat], 1e-6)) * 500.0) / 500.0)
            key = (q, int(geom.img_type), tuple(np.round(mus, 3)), tuple(np.round(sigs, 6)))
            pools.append(self._pool(key, mus, sigs, q, geom.img_type))

        rng = np.random.default_rng([self.seed, self.slot, int(frame_no), 0xF4A])
        rl = lay.row_len
        rows_per_chunk = max(1, MAX_CHUNK // rl)
        chunks: list[_Chunk] = []
        parities = ((0, geom.height),) if lay.same else ((0, geom.height // 2), (1, geom.height // 2))
        for q, nrows in parities:
            p = len(lay.patterns[q])
            for r0 in range(0, nrows, rows_per_chunk):
                n = min(rows_per_chunk, nrows - r0)
                span = n * rl
                off = int(rng.integers(0, (POOL_LEN - span) // p + 1)) * p
                chunks.append((q, r0, n, off))

        vals: np.ndarray = np.zeros(0, dtype)
        if lay.idx.size:
            e = (lay.star * light + lay.sky[lay.ch] * light + dark * (1.0 + lay.hot)) * t
            np.clip(e, 0.0, fw, out=e)
            z = rng.standard_normal(e.size)
            adu = bias + (e + np.sqrt(e + rn * rn) / b * z) / epadu * wb[lay.ch]
            native = np.clip(np.rint(adu), 0, m.max_adu).astype(np.uint16)
            vals = (native << shift) if dtype is np.uint16 else (native >> shift).astype(np.uint8)
        stats = {"mean_adu": {int(c): float(mu_all[c]) for c in set(np.concatenate(lay.patterns).tolist())},
                 "sigma_adu": {int(c): float(sig_all[c]) for c in set(np.concatenate(lay.patterns).tolist())},
                 "dark_e_per_s": dark, "elec_per_adu": epadu, "read_noise_e": rn}
        return PreparedFrame(geom, frame_no, dtype, lay, pools, chunks, vals, stats)

    def render(self, geom: Geometry, cond: Conditions, frame_no: int) -> np.ndarray:
        """Convenience for tests and tools: a new array holding frame `frame_no`."""
        return self.prepare(geom, cond, frame_no).to_array()
