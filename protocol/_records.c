/* The records section of a Kafka v2 record batch, encoded from columns and decoded into
 * record tuples, one call per batch. records_ref.py is the specification: same functions,
 * same arguments, same results, same errors (ValueError for malformed bytes); the tests
 * cross-check the two on random and hostile input.
 *
 * The decoder reads untrusted bytes: every read is bounds-checked against the end of the
 * current record, every length and count against what remains, and nothing is allocated from
 * a declared size before the bytes for it are known to be there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define VARINT_BYTES 5
#define VARLONG_BYTES 10

static inline uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline Py_ssize_t varint_size(uint64_t zz) {
    Py_ssize_t n = 1;
    while (zz >= 0x80) {
        zz >>= 7;
        n++;
    }
    return n;
}

static inline char *put_varint(char *p, uint64_t zz) {
    while (zz >= 0x80) {
        *p++ = (char)((zz & 0x7F) | 0x80);
        zz >>= 7;
    }
    *p++ = (char)zz;
    return p;
}

/* -- encoding ------------------------------------------------------------------------------ */

/* A bytes-like value or None (size -1). Exact bytes need no buffer; others are viewed. */
typedef struct {
    const char *data;
    Py_ssize_t size;
    Py_buffer view;
    int viewed;
} Bytes;

static int bytes_get(PyObject *obj, Bytes *b, const char *what) {
    b->viewed = 0;
    if (obj == Py_None) {
        b->data = NULL;
        b->size = -1;
        return 0;
    }
    if (PyBytes_CheckExact(obj)) {
        b->data = PyBytes_AS_STRING(obj);
        b->size = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be bytes or None, got %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    b->viewed = 1;
    b->data = b->view.buf;
    b->size = b->view.len;
    return 0;
}

static void bytes_release(Bytes *b) {
    if (b->viewed) {
        PyBuffer_Release(&b->view);
        b->viewed = 0;
    }
}

static inline Py_ssize_t nullable_size(Py_ssize_t size) {
    return size < 0 ? 1 : varint_size(zigzag(size)) + size;
}

static inline char *put_nullable(char *p, const Bytes *b) {
    if (b->size < 0)
        return put_varint(p, zigzag(-1));
    p = put_varint(p, zigzag(b->size));
    memcpy(p, b->data, (size_t)b->size);
    return p + b->size;
}

static void changed_size(void) {
    PyErr_SetString(PyExc_RuntimeError, "a key, value or header changed size while encoding");
}

/* The headers of one record: ``p == NULL`` measures, else writes, never past ``end``.
 * Returns the size, -1 on error. ``seq`` is the record's headers object. */
static Py_ssize_t headers_encode(PyObject *seq, char **p, const char *end) {
    if ((PyTuple_CheckExact(seq) && PyTuple_GET_SIZE(seq) == 0) ||
        (PyList_CheckExact(seq) && PyList_GET_SIZE(seq) == 0)) { /* the common case */
        if (p != NULL) {
            if (*p >= end) {
                changed_size();
                return -1;
            }
            *(*p)++ = 0;
        }
        return 1;
    }
    PyObject *fast = PySequence_Fast(seq, "headers must be a sequence of (str, bytes) pairs");
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_ssize_t total = varint_size(zigzag(n));
    if (p != NULL) {
        /* Python code (a custom sequence's iterator) may have run since the measuring pass:
         * every write is checked against the room left. */
        if (end - *p < total) {
            changed_size();
            goto error;
        }
        *p = put_varint(*p, zigzag(n));
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *pair = PySequence_Fast(PySequence_Fast_GET_ITEM(fast, j),
                                         "a header must be a (str, bytes) pair");
        if (pair == NULL)
            goto error;
        if (PySequence_Fast_GET_SIZE(pair) != 2) {
            Py_DECREF(pair);
            PyErr_SetString(PyExc_TypeError, "a header must be a (str, bytes) pair");
            goto error;
        }
        PyObject *key = PySequence_Fast_GET_ITEM(pair, 0);
        if (!PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "a header key must be str, got %.100s",
                         Py_TYPE(key)->tp_name);
            Py_DECREF(pair);
            goto error;
        }
        Py_ssize_t key_size;
        const char *key_data = PyUnicode_AsUTF8AndSize(key, &key_size);
        Bytes value;
        if (key_data == NULL || bytes_get(PySequence_Fast_GET_ITEM(pair, 1), &value, "a header value") < 0) {
            Py_DECREF(pair);
            goto error;
        }
        Py_ssize_t pair_size = varint_size(zigzag(key_size)) + key_size + nullable_size(value.size);
        total += pair_size;
        if (p != NULL && end - *p < pair_size) {
            changed_size();
            bytes_release(&value);
            Py_DECREF(pair);
            goto error;
        }
        if (p != NULL) {
            *p = put_varint(*p, zigzag(key_size));
            memcpy(*p, key_data, (size_t)key_size);
            *p += key_size;
            *p = put_nullable(*p, &value);
        }
        bytes_release(&value);
        Py_DECREF(pair);
    }
    Py_DECREF(fast);
    return total;
error:
    Py_DECREF(fast);
    return -1;
}

static PyObject *encode_records(PyObject *self, PyObject *args) {
    PyObject *timestamps, *keys, *values, *headers;
    long long base_ts;
    if (!PyArg_ParseTuple(args, "O!O!O!O!L:encode_records", &PyList_Type, &timestamps, &PyList_Type,
                          &keys, &PyList_Type, &values, &PyList_Type, &headers, &base_ts))
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(values);
    if (PyList_GET_SIZE(timestamps) != count || PyList_GET_SIZE(keys) != count ||
        PyList_GET_SIZE(headers) != count) {
        PyErr_SetString(PyExc_ValueError,
                        "timestamps, keys, values and headers must have the same length");
        return NULL;
    }
    /* Pass 1 measures each record body (kept for pass 2's length prefixes); pass 2 writes,
     * checking every write against the buffer's end: Python code (an exotic header sequence)
     * could change what a second look finds, and that must be an error, never an overflow. */
    Py_ssize_t *bodies = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(count ? count : 1));
    int64_t *deltas = PyMem_Malloc(sizeof(int64_t) * (size_t)(count ? count : 1));
    PyObject *out = NULL;
    if (bodies == NULL || deltas == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        long long ts = PyLong_AsLongLong(PyList_GET_ITEM(timestamps, i));
        if (ts == -1 && PyErr_Occurred())
            goto done;
        if (__builtin_sub_overflow(ts, base_ts, &deltas[i])) {
            PyErr_Format(PyExc_OverflowError, "timestamp delta of record %zd does not fit 64 bits", i);
            goto done;
        }
        Bytes key, value;
        if (bytes_get(PyList_GET_ITEM(keys, i), &key, "a key") < 0)
            goto done;
        if (bytes_get(PyList_GET_ITEM(values, i), &value, "a value") < 0) {
            bytes_release(&key);
            goto done;
        }
        Py_ssize_t body = 1 + varint_size(zigzag(deltas[i])) + varint_size(zigzag(i)) +
                          nullable_size(key.size) + nullable_size(value.size);
        bytes_release(&key);
        bytes_release(&value);
        Py_ssize_t header_bytes = headers_encode(PyList_GET_ITEM(headers, i), NULL, NULL);
        if (header_bytes < 0)
            goto done;
        body += header_bytes;
        if (body > INT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a record larger than 2 GiB");
            goto done;
        }
        bodies[i] = body;
        total += varint_size(zigzag(body)) + body;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    char *p = PyBytes_AS_STRING(out);
    const char *end = p + total;
    for (Py_ssize_t i = 0; i < count; i++) {
        Bytes key, value;
        if (bytes_get(PyList_GET_ITEM(keys, i), &key, "a key") < 0)
            goto fail;
        if (bytes_get(PyList_GET_ITEM(values, i), &value, "a value") < 0) {
            bytes_release(&key);
            goto fail;
        }
        Py_ssize_t fixed = varint_size(zigzag(bodies[i])) + 1 + varint_size(zigzag(deltas[i])) +
                           varint_size(zigzag(i)) + nullable_size(key.size) +
                           nullable_size(value.size);
        if (end - p < fixed) {
            bytes_release(&key);
            bytes_release(&value);
            changed_size();
            goto fail;
        }
        const char *record_end = p + varint_size(zigzag(bodies[i])) + bodies[i];
        p = put_varint(p, zigzag(bodies[i]));
        *p++ = 0; /* attributes */
        p = put_varint(p, zigzag(deltas[i]));
        p = put_varint(p, zigzag(i));
        p = put_nullable(p, &key);
        p = put_nullable(p, &value);
        bytes_release(&key);
        bytes_release(&value);
        if (headers_encode(PyList_GET_ITEM(headers, i), &p, end) < 0)
            goto fail;
        if (p != record_end) { /* its length prefix would not match its bytes */
            changed_size();
            goto fail;
        }
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    PyMem_Free(bodies);
    PyMem_Free(deltas);
    return out;
}

/* -- decoding ------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    const uint8_t *end; /* of the current record */
    Py_ssize_t index;
} Reader;

/* A zigzag varint of at most ``max_bytes`` bytes within [low, high]; -1 with ValueError. */
static int read_varint(Reader *r, int max_bytes, int64_t low, int64_t high, const char *what,
                       int64_t *out) {
    uint64_t zz = 0;
    int shift = 0;
    for (int n = 0; n < max_bytes; n++) {
        if (r->p >= r->end) {
            PyErr_Format(PyExc_ValueError, "record %zd: %s runs past the end of its record",
                         r->index, what);
            return -1;
        }
        uint8_t byte = *r->p++;
        zz |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            int64_t value = (int64_t)(zz >> 1) ^ -(int64_t)(zz & 1);
            if (value < low || value > high) {
                PyErr_Format(PyExc_ValueError, "record %zd: %s %lld is out of range", r->index,
                             what, (long long)value);
                return -1;
            }
            *out = value;
            return 0;
        }
        shift += 7;
    }
    PyErr_Format(PyExc_ValueError, "record %zd: %s is a varint longer than %d bytes", r->index,
                 what, max_bytes);
    return -1;
}

/* A nullable byte string: sets *start (NULL for null) and *size; -1 with ValueError. */
static int read_nullable(Reader *r, const char *what, const uint8_t **start, int64_t *size) {
    if (read_varint(r, VARINT_BYTES, -1, INT32_MAX, what, size) < 0)
        return -1;
    if (*size < 0) {
        *start = NULL;
        return 0;
    }
    if (*size > r->end - r->p) {
        PyErr_Format(PyExc_ValueError, "record %zd: %s of %lld bytes runs past the end of its record",
                     r->index, what, (long long)*size);
        return -1;
    }
    *start = r->p;
    r->p += *size;
    return 0;
}

static PyObject *nullable_object(const uint8_t *start, int64_t size) {
    if (start == NULL)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)start, (Py_ssize_t)size);
}

/* The headers of one record as a new list of (str, bytes | None) tuples, or NULL. */
static PyObject *read_headers(Reader *r) {
    int64_t count;
    if (read_varint(r, VARINT_BYTES, 0, INT32_MAX, "header count", &count) < 0)
        return NULL;
    /* Each header takes at least 2 bytes: never allocate for more than could be there. */
    if (count > (r->end - r->p) / 2) {
        PyErr_Format(PyExc_ValueError, "record %zd: %lld headers cannot fit in its %zd bytes",
                     r->index, (long long)count, (Py_ssize_t)(r->end - r->p));
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < count; j++) {
        const uint8_t *key_start, *value_start;
        int64_t key_size, value_size;
        if (read_nullable(r, "header key", &key_start, &key_size) < 0)
            goto error;
        if (key_start == NULL) {
            PyErr_Format(PyExc_ValueError, "record %zd: a null header key", r->index);
            goto error;
        }
        if (read_nullable(r, "header value", &value_start, &value_size) < 0)
            goto error;
        PyObject *key = PyUnicode_DecodeUTF8((const char *)key_start, (Py_ssize_t)key_size, NULL);
        if (key == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "record %zd: a header key is not UTF-8", r->index);
            }
            goto error;
        }
        PyObject *value = nullable_object(value_start, value_size);
        if (value == NULL) {
            Py_DECREF(key);
            goto error;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, key);
        PyTuple_SET_ITEM(pair, 1, value);
        PyList_SET_ITEM(list, j, pair);
    }
    return list;
error:
    /* Unfilled slots are NULL, which list deallocation skips. */
    Py_DECREF(list);
    return NULL;
}

static PyObject *decode_records_into(PyObject *self, PyObject *args) {
    PyObject *out, *prefix, *fixed_ts;
    PyTypeObject *record_type;
    Py_buffer view;
    Py_ssize_t count;
    long long base_offset, base_ts, first_offset;
    if (!PyArg_ParseTuple(args, "O!O!O!y*nLLLO:decode_records_into", &PyList_Type, &out,
                          &PyType_Type, &record_type, &PyTuple_Type, &prefix, &view, &count,
                          &base_offset, &base_ts, &first_offset, &fixed_ts))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t start_len = PyList_GET_SIZE(out);
    PyObject *last_ts = NULL; /* reused while consecutive timestamps are equal */
    long long last_ts_value = 0;
    if (!PyType_IsSubtype(record_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "record_type must be a tuple subclass");
        goto done;
    }
    if (fixed_ts != Py_None && !PyLong_Check(fixed_ts)) {
        PyErr_SetString(PyExc_TypeError, "fixed_timestamp must be an int or None");
        goto done;
    }
    if (count < 0) {
        PyErr_Format(PyExc_ValueError, "negative record count %zd", count);
        goto done;
    }
    if (count && base_offset > INT64_MAX - (count - 1)) {
        PyErr_Format(PyExc_ValueError, "offsets from %lld overflow 64 bits", base_offset);
        goto done;
    }
    Py_ssize_t nprefix = PyTuple_GET_SIZE(prefix);
    const uint8_t *data = view.buf;
    const uint8_t *data_end = data + view.len;
    Reader r = {data, data_end, 0};
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t length, ts_delta, offset_delta, key_size, value_size;
        const uint8_t *key_start, *value_start;
        r.index = i;
        r.end = data_end;
        if (read_varint(&r, VARINT_BYTES, 0, INT32_MAX, "length", &length) < 0)
            goto error;
        if (length > data_end - r.p) {
            PyErr_Format(PyExc_ValueError, "record %zd of %lld bytes runs past the end of the batch",
                         i, (long long)length);
            goto error;
        }
        r.end = r.p + length;
        if (r.p >= r.end) {
            PyErr_Format(PyExc_ValueError, "record %zd is empty", i);
            goto error;
        }
        r.p++; /* attributes: unused */
        if (read_varint(&r, VARLONG_BYTES, INT64_MIN, INT64_MAX, "timestamp delta", &ts_delta) < 0 ||
            read_varint(&r, VARINT_BYTES, INT32_MIN, INT32_MAX, "offset delta", &offset_delta) < 0)
            goto error;
        if (offset_delta != i) {
            PyErr_Format(PyExc_ValueError, "record %zd has offset delta %lld", i,
                         (long long)offset_delta);
            goto error;
        }
        if (read_nullable(&r, "key", &key_start, &key_size) < 0 ||
            read_nullable(&r, "value", &value_start, &value_size) < 0)
            goto error;
        /* Headers are parsed (for their bounds) even for skipped records; built only if kept. */
        int keep = base_offset + i >= first_offset;
        PyObject *headers = read_headers(&r);
        if (headers == NULL)
            goto error;
        if (r.p != r.end) {
            Py_DECREF(headers);
            PyErr_Format(PyExc_ValueError, "record %zd has %zd bytes after its headers", i,
                         (Py_ssize_t)(r.end - r.p));
            goto error;
        }
        int64_t ts;
        if (__builtin_add_overflow((int64_t)base_ts, ts_delta, &ts)) {
            Py_DECREF(headers);
            PyErr_Format(PyExc_ValueError, "record %zd timestamp overflows 64 bits", i);
            goto error;
        }
        if (!keep) {
            Py_DECREF(headers);
            continue;
        }
        PyObject *record = record_type->tp_alloc(record_type, nprefix + 5);
        if (record == NULL) {
            Py_DECREF(headers);
            goto error;
        }
        for (Py_ssize_t k = 0; k < nprefix; k++) {
            PyObject *item = PyTuple_GET_ITEM(prefix, k);
            Py_INCREF(item);
            PyTuple_SET_ITEM(record, k, item);
        }
        PyTuple_SET_ITEM(record, nprefix + 4, headers);
        PyObject *offset = PyLong_FromLongLong(base_offset + i);
        if (offset == NULL) {
            Py_DECREF(record);
            goto error;
        }
        PyTuple_SET_ITEM(record, nprefix, offset);
        PyObject *timestamp;
        if (fixed_ts != Py_None) {
            timestamp = fixed_ts;
            Py_INCREF(timestamp);
        } else if (last_ts != NULL && last_ts_value == ts) {
            timestamp = last_ts;
            Py_INCREF(timestamp);
        } else {
            timestamp = PyLong_FromLongLong(ts);
            if (timestamp == NULL) {
                Py_DECREF(record);
                goto error;
            }
            Py_XSETREF(last_ts, timestamp);
            Py_INCREF(timestamp);
            last_ts_value = ts;
        }
        PyTuple_SET_ITEM(record, nprefix + 1, timestamp);
        PyObject *key = nullable_object(key_start, key_size);
        if (key == NULL) {
            Py_DECREF(record);
            goto error;
        }
        PyTuple_SET_ITEM(record, nprefix + 2, key);
        PyObject *value = nullable_object(value_start, value_size);
        if (value == NULL) {
            Py_DECREF(record);
            goto error;
        }
        PyTuple_SET_ITEM(record, nprefix + 3, value);
        int appended = PyList_Append(out, record);
        Py_DECREF(record);
        if (appended < 0)
            goto error;
    }
    if (r.p != data_end) {
        PyErr_Format(PyExc_ValueError, "%zd bytes after the last record", (Py_ssize_t)(data_end - r.p));
        goto error;
    }
    result = Py_None;
    Py_INCREF(result);
    goto done;
error: {
    /* Leave ``out`` as it was, keeping the error that brought us here. */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (PyList_SetSlice(out, start_len, PY_SSIZE_T_MAX, NULL) < 0)
        PyErr_Clear();
    PyErr_Restore(type, value, traceback);
}
done:
    Py_XDECREF(last_ts);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"encode_records", encode_records, METH_VARARGS,
     "encode_records(timestamps, keys, values, headers, base_timestamp) -> bytes\n\n"
     "The records section for parallel columns (see records_ref.encode_records)."},
    {"decode_records_into", decode_records_into, METH_VARARGS,
     "decode_records_into(out, record_type, prefix, data, count, base_offset, base_timestamp,\n"
     "                    first_offset, fixed_timestamp) -> None\n\n"
     "Append the records of a records section to out (see records_ref.decode_records_into)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records",
    "Kafka v2 records sections, encoded from and decoded to Python objects in one call.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
