/*
 * Rice coding of image rows for FITS tile compression (ZCMPTYPE = 'RICE_1'), behind zwo_common/fpack.py.
 *
 * Each row of the source array is one tile: its first pixel raw in 8 * bytepix bits, then blocks of
 * `blocksize` differences (pixel minus the one before it, modulo 2^(8 * bytepix), mapped to
 * non-negative integers 0, -1, 1, -2 ... -> 0, 1, 2, 3 ...), each block a split-sample code chosen
 * from the block's mean (a few "fs" bits per block say which), an all-zero block as just its code,
 * a noisy block stored raw. Bits go out most significant first; each tile ends on a byte boundary.
 * This is the layout of the FITS tiled-image convention, which funpack, astropy and every cfitsio
 * reader decode; the choice of split per block follows the convention's reference encoder so that
 * our files are byte-identical to fpack's (tests/indi/test_indi_compression.py checks both).
 *
 * Pure array code with the GIL released, so fpack.py runs bands of rows on several cores; the numpy
 * fallback in fpack.py produces the same bytes when this is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t *p;
    uint64_t acc;
    int n; /* bits held in acc, < 32 between calls */
} bitwriter;

static inline void put_bits(bitwriter *w, uint32_t value, int nbits)
{
    /* nbits <= 32; value has no bits above nbits */
    w->acc = (w->acc << nbits) | value;
    w->n += nbits;
    if (w->n >= 32) {
        uint32_t out = (uint32_t)(w->acc >> (w->n - 32));
        w->p[0] = (uint8_t)(out >> 24);
        w->p[1] = (uint8_t)(out >> 16);
        w->p[2] = (uint8_t)(out >> 8);
        w->p[3] = (uint8_t)out;
        w->p += 4;
        w->n -= 32;
        w->acc &= (w->n ? ((1ull << w->n) - 1) : 0);
    }
}

static inline void put_zeros(bitwriter *w, uint32_t count)
{
    while (count > 24) {
        put_bits(w, 0, 24);
        count -= 24;
    }
    if (count)
        put_bits(w, 0, (int)count);
}

static inline void flush_bits(bitwriter *w)
{
    while (w->n >= 8) {
        w->n -= 8;
        *w->p++ = (uint8_t)(w->acc >> w->n);
    }
    if (w->n > 0) {
        *w->p++ = (uint8_t)(w->acc << (8 - w->n));
        w->n = 0;
    }
    w->acc = 0;
}

/* One tile of n pixels; src advances by `stride` bytes. Returns the bytes written to out. Inlined
 * into one copy per pixel size, so that the size is a constant in the inner loops. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline size_t rice_tile(const uint8_t *src, Py_ssize_t stride, Py_ssize_t n, int bytepix, int blocksize,
                        uint32_t first_xor, uint32_t *diff, uint8_t *out)
{
    const int bbits = 8 * bytepix;
    const int fsbits = bytepix == 1 ? 3 : 4;
    const int fsmax = bytepix == 1 ? 6 : 14;
    const uint32_t wrap = bytepix == 1 ? 0xFFu : 0xFFFFu;
    const uint32_t sign = bytepix == 1 ? 0x80u : 0x8000u;
    bitwriter w = {out, 0, 0};
    uint32_t last;

    if (n <= 0)
        return 0;
#define PIXEL(i) (bytepix == 1 ? (uint32_t)src[(i) * stride] \
                               : (uint32_t)(*(const uint16_t *)(src + (i) * stride)))
    last = PIXEL(0);
    put_bits(&w, (last ^ first_xor) & wrap, bbits);
    for (Py_ssize_t start = 0; start < n; start += blocksize) {
        int count = (int)((n - start) < blocksize ? (n - start) : blocksize);
        uint64_t sum = 0;
        for (int j = 0; j < count; j++) {
            uint32_t v = PIXEL(start + j);
            uint32_t d = (v - last) & wrap; /* the difference modulo 2^bbits ... */
            last = v;
            /* ... as a signed number, mapped to 0, 1, 2, ... for 0, -1, 1, ... */
            uint32_t m = (d & sign) ? ((((wrap + 1) - d) << 1) - 1) : (d << 1);
            diff[j] = m;
            sum += m;
        }
        uint64_t half = (uint64_t)(count / 2) + 1;
        uint64_t mean = sum >= half ? (sum - half) / (uint64_t)count : 0;
        uint32_t psum = (uint32_t)(mean >> 1);
        int fs = 0;
        while (psum) {
            fs++;
            psum >>= 1;
        }
        if (fs >= fsmax) { /* noisy block: raw */
            put_bits(&w, (uint32_t)(fsmax + 1), fsbits);
            for (int j = 0; j < count; j++)
                put_bits(&w, diff[j], bbits);
        } else if (fs == 0 && sum == 0) { /* all differences zero */
            put_bits(&w, 0, fsbits);
        } else {
            uint32_t lowmask = (1u << fs) - 1;
            put_bits(&w, (uint32_t)(fs + 1), fsbits);
            for (int j = 0; j < count; j++) {
                uint32_t m = diff[j];
                uint32_t top = m >> fs;
                if (top + 1 + (uint32_t)fs <= 32) {
                    put_bits(&w, (1u << fs) | (m & lowmask), (int)(top + 1) + fs);
                } else {
                    put_zeros(&w, top);
                    put_bits(&w, (1u << fs) | (m & lowmask), fs + 1);
                }
            }
        }
    }
#undef PIXEL
    flush_bits(&w);
    return (size_t)(w.p - out);
}

static PyObject *rice_rows(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *out_obj, *sizes_obj;
    Py_ssize_t offset;
    int blocksize;
    unsigned int first_xor;
    Py_buffer src, out, sizes;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOnOiI", &src_obj, &out_obj, &offset, &sizes_obj, &blocksize, &first_xor))
        return NULL;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (PyObject_GetBuffer(sizes_obj, &sizes, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&out);
        return NULL;
    }
    PyObject *result = NULL;
    const int bytepix = (int)src.itemsize;
    if (src.ndim != 2 || (bytepix != 1 && bytepix != 2)) {
        PyErr_SetString(PyExc_ValueError, "rice_rows: need a 2-D array of 8- or 16-bit pixels");
        goto done;
    }
    if (sizes.itemsize != 8 || sizes.len / 8 < src.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "rice_rows: sizes must be int64 with one entry per row");
        goto done;
    }
    if (blocksize < 1 || blocksize > 4096) {
        PyErr_SetString(PyExc_ValueError, "rice_rows: block size must be 1 to 4096");
        goto done;
    }
    Py_ssize_t rows = src.shape[0], cols = src.shape[1];
    /* Worst case per tile: first pixel, one code per block, every difference raw, a partial byte. */
    Py_ssize_t blocks = (cols + blocksize - 1) / blocksize;
    Py_ssize_t worst = rows * (bytepix + (blocks * 4 + 7) / 8 + cols * bytepix + 8);
    if (offset < 0 || offset > out.len || out.len - offset < worst) {
        PyErr_Format(PyExc_ValueError, "rice_rows: output needs %zd bytes from offset %zd, has %zd",
                     worst, offset, out.len - offset);
        goto done;
    }
    uint32_t *diff = (uint32_t *)PyMem_RawMalloc(sizeof(uint32_t) * (size_t)blocksize);
    if (diff == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t total = 0;
    int64_t *sz = (int64_t *)sizes.buf;
    uint8_t *dst = (uint8_t *)out.buf + offset;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)src.buf + r * src.strides[0];
        size_t got = bytepix == 1
            ? rice_tile(row, src.strides[1], cols, 1, blocksize, first_xor, diff, dst + total)
            : rice_tile(row, src.strides[1], cols, 2, blocksize, first_xor, diff, dst + total);
        sz[r] = (int64_t)got;
        total += got;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(diff);
    result = PyLong_FromSize_t(total);
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&out);
    PyBuffer_Release(&sizes);
    return result;
}

static PyMethodDef methods[] = {
    {"rice_rows", rice_rows, METH_VARARGS,
     "rice_rows(src, out, offset, sizes, blocksize, first_xor) -> bytes written\n\n"
     "Rice-code each row of the 2-D 8/16-bit array `src` as one tile into `out` from `offset`,\n"
     "one after the other; sizes[r] receives the length of row r's tile. `first_xor` is XORed into\n"
     "each tile's first pixel (0x8000: uint16 pixels stored as int16 with BZERO = 32768)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rice", "Rice coding for FITS tile compression.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rice(void)
{
    return PyModule_Create(&module);
}
