/*
 * Cache-blocked transpose of 8- and 16-bit frames, for the ImageBytes encoder (imagecodec.py).
 *
 * ASCOM sends images width-outermost, the SDK delivers them row by row: every frame is transposed
 * once before the first byte of it can go out. numpy's strided copy, even tiled, moves about a third
 * of memcpy's rate on a 61 MP frame; this moves about half of it, with the GIL released so that the
 * band workers run on all cores while the event loop keeps answering polls. Measurements and the
 * tile sizes: docs/performance.md. Without a compiler the package still works: imagecodec falls
 * back to numpy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define KERNEL_NAME "sse2"
#elif defined(__ARM_NEON) || defined(__aarch64__)
#include <arm_neon.h>
#define KERNEL_NAME "neon"
#define HAVE_NEON 1
#else
#define KERNEL_NAME "scalar"
#endif

/* Tile: TILE_ROWS source rows by TILE_COLS source columns. Tall and narrow wins: the destination is
 * written in runs of TILE_ROWS elements, and the source lines touched (TILE_ROWS cache lines) stay
 * in L1/L2 across the 8-column strips. Measured on a 9576x6388 16-bit frame, one core (ms):
 * 1024x32: 18, 512x64: 18.5, 128x256: 25, 64x64: 27, numpy 512x512 tiles: 46, memcpy: 9.7. */
#define TILE_ROWS 1024
#define TILE_COLS 32

#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* 4x4 block of 16-bit items in 64-bit registers (SWAR): swap 16-bit lanes between row pairs, then
 * 32-bit halves. Four times the work per load of the element-by-element loop; what a CPU without
 * SSE2/NEON (e.g. 32-bit Raspberry Pi OS builds) runs. The lane order assumes little-endian. */
static inline void block4_u16_swar(const uint16_t *s, ptrdiff_t ss, uint16_t *d, ptrdiff_t ds)
{
    const uint64_t lo16 = 0x0000FFFF0000FFFFull, hi16 = 0xFFFF0000FFFF0000ull;
    const uint64_t lo32 = 0x00000000FFFFFFFFull, hi32 = 0xFFFFFFFF00000000ull;
    uint64_t r0, r1, r2, r3;
    memcpy(&r0, s + 0 * ss, 8);
    memcpy(&r1, s + 1 * ss, 8);
    memcpy(&r2, s + 2 * ss, 8);
    memcpy(&r3, s + 3 * ss, 8);
    uint64_t t0 = (r0 & lo16) | ((r1 & lo16) << 16);   /* r0[0] r1[0] r0[2] r1[2] */
    uint64_t t1 = ((r0 >> 16) & lo16) | (r1 & hi16);   /* r0[1] r1[1] r0[3] r1[3] */
    uint64_t t2 = (r2 & lo16) | ((r3 & lo16) << 16);
    uint64_t t3 = ((r2 >> 16) & lo16) | (r3 & hi16);
    uint64_t c0 = (t0 & lo32) | (t2 << 32), c2 = (t0 >> 32) | (t2 & hi32);
    uint64_t c1 = (t1 & lo32) | (t3 << 32), c3 = (t1 >> 32) | (t3 & hi32);
    memcpy(d + 0 * ds, &c0, 8);
    memcpy(d + 1 * ds, &c1, 8);
    memcpy(d + 2 * ds, &c2, 8);
    memcpy(d + 3 * ds, &c3, 8);
}
#else
static inline void block4_u16_swar(const uint16_t *s, ptrdiff_t ss, uint16_t *d, ptrdiff_t ds)
{
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            d[j * ds + i] = s[i * ss + j];
}
#endif

/* 8x8 block of 16-bit items: s[i * ss + j] -> d[j * ds + i]. Strides in items. */
static inline void block8_u16_scalar(const uint16_t *s, ptrdiff_t ss, uint16_t *d, ptrdiff_t ds)
{
    block4_u16_swar(s, ss, d, ds);
    block4_u16_swar(s + 4, ss, d + 4 * ds, ds);
    block4_u16_swar(s + 4 * ss, ss, d + 4, ds);
    block4_u16_swar(s + 4 * ss + 4, ss, d + 4 * ds + 4, ds);
}

static inline void block8_u16_simd(const uint16_t *s, ptrdiff_t ss, uint16_t *d, ptrdiff_t ds)
{
#if defined(__SSE2__)
    /* Three rounds of interleaving: 16-bit pairs, 32-bit pairs, 64-bit halves. */
    __m128i r0 = _mm_loadu_si128((const __m128i *)(s + 0 * ss));
    __m128i r1 = _mm_loadu_si128((const __m128i *)(s + 1 * ss));
    __m128i r2 = _mm_loadu_si128((const __m128i *)(s + 2 * ss));
    __m128i r3 = _mm_loadu_si128((const __m128i *)(s + 3 * ss));
    __m128i r4 = _mm_loadu_si128((const __m128i *)(s + 4 * ss));
    __m128i r5 = _mm_loadu_si128((const __m128i *)(s + 5 * ss));
    __m128i r6 = _mm_loadu_si128((const __m128i *)(s + 6 * ss));
    __m128i r7 = _mm_loadu_si128((const __m128i *)(s + 7 * ss));
    __m128i a0 = _mm_unpacklo_epi16(r0, r1), a1 = _mm_unpackhi_epi16(r0, r1);
    __m128i a2 = _mm_unpacklo_epi16(r2, r3), a3 = _mm_unpackhi_epi16(r2, r3);
    __m128i a4 = _mm_unpacklo_epi16(r4, r5), a5 = _mm_unpackhi_epi16(r4, r5);
    __m128i a6 = _mm_unpacklo_epi16(r6, r7), a7 = _mm_unpackhi_epi16(r6, r7);
    __m128i b0 = _mm_unpacklo_epi32(a0, a2), b1 = _mm_unpackhi_epi32(a0, a2);
    __m128i b2 = _mm_unpacklo_epi32(a1, a3), b3 = _mm_unpackhi_epi32(a1, a3);
    __m128i b4 = _mm_unpacklo_epi32(a4, a6), b5 = _mm_unpackhi_epi32(a4, a6);
    __m128i b6 = _mm_unpacklo_epi32(a5, a7), b7 = _mm_unpackhi_epi32(a5, a7);
    _mm_storeu_si128((__m128i *)(d + 0 * ds), _mm_unpacklo_epi64(b0, b4));
    _mm_storeu_si128((__m128i *)(d + 1 * ds), _mm_unpackhi_epi64(b0, b4));
    _mm_storeu_si128((__m128i *)(d + 2 * ds), _mm_unpacklo_epi64(b1, b5));
    _mm_storeu_si128((__m128i *)(d + 3 * ds), _mm_unpackhi_epi64(b1, b5));
    _mm_storeu_si128((__m128i *)(d + 4 * ds), _mm_unpacklo_epi64(b2, b6));
    _mm_storeu_si128((__m128i *)(d + 5 * ds), _mm_unpackhi_epi64(b2, b6));
    _mm_storeu_si128((__m128i *)(d + 6 * ds), _mm_unpacklo_epi64(b3, b7));
    _mm_storeu_si128((__m128i *)(d + 7 * ds), _mm_unpackhi_epi64(b3, b7));
#elif defined(HAVE_NEON)
    /* Same three rounds with NEON's trn: 16-bit lanes, 32-bit lanes, then the 64-bit halves. */
    uint16x8x2_t t01 = vtrnq_u16(vld1q_u16(s + 0 * ss), vld1q_u16(s + 1 * ss));
    uint16x8x2_t t23 = vtrnq_u16(vld1q_u16(s + 2 * ss), vld1q_u16(s + 3 * ss));
    uint16x8x2_t t45 = vtrnq_u16(vld1q_u16(s + 4 * ss), vld1q_u16(s + 5 * ss));
    uint16x8x2_t t67 = vtrnq_u16(vld1q_u16(s + 6 * ss), vld1q_u16(s + 7 * ss));
    uint32x4x2_t e03 = vtrnq_u32(vreinterpretq_u32_u16(t01.val[0]), vreinterpretq_u32_u16(t23.val[0]));
    uint32x4x2_t o03 = vtrnq_u32(vreinterpretq_u32_u16(t01.val[1]), vreinterpretq_u32_u16(t23.val[1]));
    uint32x4x2_t e47 = vtrnq_u32(vreinterpretq_u32_u16(t45.val[0]), vreinterpretq_u32_u16(t67.val[0]));
    uint32x4x2_t o47 = vtrnq_u32(vreinterpretq_u32_u16(t45.val[1]), vreinterpretq_u32_u16(t67.val[1]));
    uint16x8_t c04a = vreinterpretq_u16_u32(e03.val[0]), c04b = vreinterpretq_u16_u32(e47.val[0]);
    uint16x8_t c26a = vreinterpretq_u16_u32(e03.val[1]), c26b = vreinterpretq_u16_u32(e47.val[1]);
    uint16x8_t c15a = vreinterpretq_u16_u32(o03.val[0]), c15b = vreinterpretq_u16_u32(o47.val[0]);
    uint16x8_t c37a = vreinterpretq_u16_u32(o03.val[1]), c37b = vreinterpretq_u16_u32(o47.val[1]);
    vst1q_u16(d + 0 * ds, vcombine_u16(vget_low_u16(c04a), vget_low_u16(c04b)));
    vst1q_u16(d + 4 * ds, vcombine_u16(vget_high_u16(c04a), vget_high_u16(c04b)));
    vst1q_u16(d + 1 * ds, vcombine_u16(vget_low_u16(c15a), vget_low_u16(c15b)));
    vst1q_u16(d + 5 * ds, vcombine_u16(vget_high_u16(c15a), vget_high_u16(c15b)));
    vst1q_u16(d + 2 * ds, vcombine_u16(vget_low_u16(c26a), vget_low_u16(c26b)));
    vst1q_u16(d + 6 * ds, vcombine_u16(vget_high_u16(c26a), vget_high_u16(c26b)));
    vst1q_u16(d + 3 * ds, vcombine_u16(vget_low_u16(c37a), vget_low_u16(c37b)));
    vst1q_u16(d + 7 * ds, vcombine_u16(vget_high_u16(c37a), vget_high_u16(c37b)));
#else
    block8_u16_scalar(s, ss, d, ds);
#endif
}

/* 8x8 block of bytes: s[i * ss + j] -> d[j * ds + i]. */
static inline void block8_u8_scalar(const uint8_t *s, ptrdiff_t ss, uint8_t *d, ptrdiff_t ds)
{
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 8; i++)
            d[j * ds + i] = s[i * ss + j];
}

static inline void block8_u8_simd(const uint8_t *s, ptrdiff_t ss, uint8_t *d, ptrdiff_t ds)
{
#if defined(__SSE2__)
    /* Interleave bytes of row pairs, then 16-bit pairs, then 32-bit quads: each 128-bit result holds
     * two destination rows of 8 bytes. */
    __m128i a0 = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(s + 0 * ss)), _mm_loadl_epi64((const __m128i *)(s + 1 * ss)));
    __m128i a1 = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(s + 2 * ss)), _mm_loadl_epi64((const __m128i *)(s + 3 * ss)));
    __m128i a2 = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(s + 4 * ss)), _mm_loadl_epi64((const __m128i *)(s + 5 * ss)));
    __m128i a3 = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(s + 6 * ss)), _mm_loadl_epi64((const __m128i *)(s + 7 * ss)));
    __m128i b0 = _mm_unpacklo_epi16(a0, a1), b1 = _mm_unpackhi_epi16(a0, a1); /* rows 0-3: cols 0-3, 4-7 */
    __m128i b2 = _mm_unpacklo_epi16(a2, a3), b3 = _mm_unpackhi_epi16(a2, a3); /* rows 4-7 */
    __m128i c01 = _mm_unpacklo_epi32(b0, b2), c23 = _mm_unpackhi_epi32(b0, b2);
    __m128i c45 = _mm_unpacklo_epi32(b1, b3), c67 = _mm_unpackhi_epi32(b1, b3);
    _mm_storel_epi64((__m128i *)(d + 0 * ds), c01);
    _mm_storel_epi64((__m128i *)(d + 1 * ds), _mm_srli_si128(c01, 8));
    _mm_storel_epi64((__m128i *)(d + 2 * ds), c23);
    _mm_storel_epi64((__m128i *)(d + 3 * ds), _mm_srli_si128(c23, 8));
    _mm_storel_epi64((__m128i *)(d + 4 * ds), c45);
    _mm_storel_epi64((__m128i *)(d + 5 * ds), _mm_srli_si128(c45, 8));
    _mm_storel_epi64((__m128i *)(d + 6 * ds), c67);
    _mm_storel_epi64((__m128i *)(d + 7 * ds), _mm_srli_si128(c67, 8));
#elif defined(HAVE_NEON)
    uint8x8x2_t t01 = vtrn_u8(vld1_u8(s + 0 * ss), vld1_u8(s + 1 * ss));
    uint8x8x2_t t23 = vtrn_u8(vld1_u8(s + 2 * ss), vld1_u8(s + 3 * ss));
    uint8x8x2_t t45 = vtrn_u8(vld1_u8(s + 4 * ss), vld1_u8(s + 5 * ss));
    uint8x8x2_t t67 = vtrn_u8(vld1_u8(s + 6 * ss), vld1_u8(s + 7 * ss));
    uint16x4x2_t e03 = vtrn_u16(vreinterpret_u16_u8(t01.val[0]), vreinterpret_u16_u8(t23.val[0]));
    uint16x4x2_t o03 = vtrn_u16(vreinterpret_u16_u8(t01.val[1]), vreinterpret_u16_u8(t23.val[1]));
    uint16x4x2_t e47 = vtrn_u16(vreinterpret_u16_u8(t45.val[0]), vreinterpret_u16_u8(t67.val[0]));
    uint16x4x2_t o47 = vtrn_u16(vreinterpret_u16_u8(t45.val[1]), vreinterpret_u16_u8(t67.val[1]));
    uint32x2x2_t c04 = vtrn_u32(vreinterpret_u32_u16(e03.val[0]), vreinterpret_u32_u16(e47.val[0]));
    uint32x2x2_t c26 = vtrn_u32(vreinterpret_u32_u16(e03.val[1]), vreinterpret_u32_u16(e47.val[1]));
    uint32x2x2_t c15 = vtrn_u32(vreinterpret_u32_u16(o03.val[0]), vreinterpret_u32_u16(o47.val[0]));
    uint32x2x2_t c37 = vtrn_u32(vreinterpret_u32_u16(o03.val[1]), vreinterpret_u32_u16(o47.val[1]));
    vst1_u8(d + 0 * ds, vreinterpret_u8_u32(c04.val[0]));
    vst1_u8(d + 4 * ds, vreinterpret_u8_u32(c04.val[1]));
    vst1_u8(d + 1 * ds, vreinterpret_u8_u32(c15.val[0]));
    vst1_u8(d + 5 * ds, vreinterpret_u8_u32(c15.val[1]));
    vst1_u8(d + 2 * ds, vreinterpret_u8_u32(c26.val[0]));
    vst1_u8(d + 6 * ds, vreinterpret_u8_u32(c26.val[1]));
    vst1_u8(d + 3 * ds, vreinterpret_u8_u32(c37.val[0]));
    vst1_u8(d + 7 * ds, vreinterpret_u8_u32(c37.val[1]));
#else
    block8_u8_scalar(s, ss, d, ds);
#endif
}

/* Columns [x0, x1) of src (rows x cols, `pitch` items from one row to the next) into rows [x0, x1)
 * of dst (cols x rows, contiguous): the tiles in 8x8 blocks (SIMD or portable kernel), the ragged
 * edges element by element. One walk for both item sizes, so the two cannot drift apart. */
#define DEFINE_SWAP(NAME, T, SIMD_BLOCK, SCALAR_BLOCK)                                              \
    static void NAME(const T *src, T *dst, ptrdiff_t rows, ptrdiff_t pitch, ptrdiff_t x0,          \
                     ptrdiff_t x1, int simd)                                                       \
    {                                                                                              \
        for (ptrdiff_t yb = 0; yb < rows; yb += TILE_ROWS) {                                       \
            ptrdiff_t ye = yb + TILE_ROWS < rows ? yb + TILE_ROWS : rows;                          \
            for (ptrdiff_t xb = x0; xb < x1; xb += TILE_COLS) {                                    \
                ptrdiff_t xe = xb + TILE_COLS < x1 ? xb + TILE_COLS : x1;                          \
                ptrdiff_t x = xb;                                                                  \
                for (; x + 8 <= xe; x += 8) {                                                      \
                    ptrdiff_t y = yb;                                                              \
                    if (simd)                                                                      \
                        for (; y + 8 <= ye; y += 8)                                                \
                            SIMD_BLOCK(src + y * pitch + x, pitch, dst + x * rows + y, rows);      \
                    else                                                                           \
                        for (; y + 8 <= ye; y += 8)                                                \
                            SCALAR_BLOCK(src + y * pitch + x, pitch, dst + x * rows + y, rows);    \
                    for (; y < ye; y++)                                                            \
                        for (ptrdiff_t i = 0; i < 8; i++)                                          \
                            dst[(x + i) * rows + y] = src[y * pitch + x + i];                      \
                }                                                                                  \
                for (; x < xe; x++)                                                                \
                    for (ptrdiff_t y = yb; y < ye; y++)                                            \
                        dst[x * rows + y] = src[y * pitch + x];                                    \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_SWAP(swap_u16, uint16_t, block8_u16_simd, block8_u16_scalar)
DEFINE_SWAP(swap_u8, uint8_t, block8_u8_simd, block8_u8_scalar)

PyDoc_STRVAR(swap_axes_doc,
"swap_axes(src, dst, x0, x1, simd=True)\n"
"--\n\n"
"Write columns [x0, x1) of ``src`` - a 2-D (rows, cols) array of 1- or 2-byte items whose rows are\n"
"contiguous (any row stride: a cropped view will do) - as rows [x0, x1) of ``dst``, a C-contiguous\n"
"(cols, rows) array of the same item size. Releases the GIL. ``simd=False`` uses the portable kernel\n"
"(for tests; the result is the same).");

static PyObject *swap_axes(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"src", "dst", "x0", "x1", "simd", NULL};
    PyObject *src_obj, *dst_obj;
    Py_buffer src, dst;
    Py_ssize_t x0, x1;
    int simd = 1;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOnn|p", kwlist, &src_obj, &dst_obj, &x0, &x1, &simd))
        return NULL;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_STRIDED_RO) < 0)
        return NULL;
    if (PyObject_GetBuffer(dst_obj, &dst, PyBUF_STRIDED) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    const char *problem = NULL;
    Py_ssize_t item = src.itemsize, rows = 0, cols = 0;
    if (src.ndim != 2 || dst.ndim != 2)
        problem = "src and dst must be 2-D";
    else if (item != 1 && item != 2)
        problem = "items must be 1 or 2 bytes";
    else if (dst.itemsize != item)
        problem = "src and dst must have the same item size";
    else if ((rows = src.shape[0], cols = src.shape[1], dst.shape[0] != cols || dst.shape[1] != rows))
        problem = "dst must have the shape (cols, rows) of src transposed";
    else if (!PyBuffer_IsContiguous(&dst, 'C'))
        problem = "dst must be C-contiguous";
    else if ((cols > 1 && src.strides[1] != item) || src.strides[0] < 0 || src.strides[0] % item != 0
             || (rows > 1 && src.strides[0] < cols * item))
        problem = "src rows must be contiguous, in order, and not overlap";
    else if (x0 < 0 || x1 < x0 || x1 > cols)
        problem = "need 0 <= x0 <= x1 <= cols";
    if (problem != NULL) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    ptrdiff_t pitch = rows > 1 ? src.strides[0] / item : cols;
    Py_BEGIN_ALLOW_THREADS
    if (item == 2)
        swap_u16((const uint16_t *)src.buf, (uint16_t *)dst.buf, rows, pitch, x0, x1, simd);
    else
        swap_u8((const uint8_t *)src.buf, (uint8_t *)dst.buf, rows, pitch, x0, x1, simd);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"swap_axes", (PyCFunction)(void (*)(void))swap_axes, METH_VARARGS | METH_KEYWORDS, swap_axes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_transpose",
    "Cache-blocked transpose of 8- and 16-bit frames (GIL released); see swap_axes.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__transpose(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "KERNEL", KERNEL_NAME) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
