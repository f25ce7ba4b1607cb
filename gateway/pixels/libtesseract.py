"""tesseract through its C API (``libtesseract.so.5``, shipped by Debian's ``tesseract-ocr``).

The command-line engine loads the LSTM model on every call (about 0.1 s of CPU); this engine
loads it once per process and keeps it, which is what makes a 1024x768 frame affordable. Same
settings as the command line: sparse text (``--psm 11``), LSTM, no inverted second pass, one
OpenMP thread (``OMP_THREAD_LIMIT=1`` is set before the library is loaded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import weakref

from PIL import Image

from gateway.pixels.model import Word
from gateway.pixels.ocr import OcrFailed, PageSegMode, parse_tsv

PSM_SPARSE_TEXT = 11
SOURCE_DPI = 96  # screens; stops tesseract estimating (and printing) a resolution
OEM_LSTM_ONLY = 1


def _forget(reference: weakref.ReferenceType[LibTesseractEngine]) -> None:
    """In a forked child: open a fresh handle on first use (the parent's lock may be held)."""
    engine = reference()
    if engine is not None:
        engine._lib, engine._handle, engine._lock = None, None, threading.Lock()


def _one_openmp_thread() -> None:
    """OMP_THREAD_LIMIT only counts if set before OpenMP starts; this holds in any case (per
    calling thread, so on every read)."""
    gomp = _gomp()
    if gomp is not None:
        gomp.omp_set_num_threads(1)


@functools.cache
def _gomp() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("gomp")  # runs ldconfig: about 2 ms, so once per process
    return ctypes.CDLL(name) if name is not None else None


def _close(lib: ctypes.CDLL, handle: ctypes.c_void_p) -> None:
    lib.TessBaseAPIEnd(handle)
    lib.TessBaseAPIDelete(handle)


@functools.cache
def _library_name() -> str | None:
    """Looked up once per process (``find_library`` runs ldconfig); installing tesseract
    while the gateway runs takes a restart to be seen."""
    return ctypes.util.find_library("tesseract")


class LibTesseractEngine:
    name = "tesseract"

    def __init__(self, language: str = "eng", psm: int = PSM_SPARSE_TEXT) -> None:
        self.language = language
        self.psm = psm
        self._lib: ctypes.CDLL | None = None
        self._handle: ctypes.c_void_p | None = None
        self._lock = threading.Lock()
        reference = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget(reference))

    def __getstate__(self) -> dict[str, object]:
        """Picklable (a worker pool may ship the stage): the library handle is not carried."""
        return {"language": self.language, "psm": self.psm}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(str(state["language"]), int(str(state["psm"])))  # type: ignore[misc]

    @staticmethod
    def is_available() -> bool:
        return LibTesseractEngine.missing_dependency() is None

    @staticmethod
    def missing_dependency() -> str | None:
        if _library_name() is None:
            return "tesseract-ocr (Debian package: libtesseract5)"
        return None

    def _open(self) -> tuple[ctypes.CDLL, ctypes.c_void_p]:
        if self._lib is not None and self._handle is not None:
            return self._lib, self._handle
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        name = _library_name()
        if name is None:
            raise OcrFailed("libtesseract is not installed")
        lib = ctypes.CDLL(name)
        lib.TessBaseAPICreate.restype = ctypes.c_void_p
        lib.TessBaseAPIInit2.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.TessBaseAPISetVariable.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
        lib.TessBaseAPISetPageSegMode.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.TessBaseAPISetImage.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.TessBaseAPIRecognize.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.TessBaseAPIGetTsvText.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.TessBaseAPIGetTsvText.restype = ctypes.c_void_p
        lib.TessDeleteText.argtypes = [ctypes.c_void_p]
        lib.TessBaseAPIClear.argtypes = [ctypes.c_void_p]
        lib.TessBaseAPISetSourceResolution.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.TessBaseAPIEnd.argtypes = [ctypes.c_void_p]
        lib.TessBaseAPIDelete.argtypes = [ctypes.c_void_p]
        handle = ctypes.c_void_p(lib.TessBaseAPICreate())
        if lib.TessBaseAPIInit2(handle, None, self.language.encode(), OEM_LSTM_ONLY) != 0:
            raise OcrFailed("libtesseract could not load its language data")
        lib.TessBaseAPISetVariable(handle, b"tessedit_do_invert", b"0")
        lib.TessBaseAPISetVariable(handle, b"debug_file", os.devnull.encode())  # no chatter
        lib.TessBaseAPISetPageSegMode(handle, self.psm)
        self._lib, self._handle = lib, handle
        weakref.finalize(self, _close, lib, handle)
        return lib, handle

    def read(self, image: Image.Image, psm: PageSegMode | None = None) -> list[Word]:
        """OCR ``image``; ``psm`` overrides the page segmentation for this call only."""
        grey = image.convert("L")
        data = grey.tobytes()
        with self._lock:
            lib, handle = self._open()
            _one_openmp_thread()
            lib.TessBaseAPISetPageSegMode(handle, self.psm if psm is None else int(psm))
            lib.TessBaseAPISetImage(handle, data, grey.width, grey.height, 1, grey.width)
            lib.TessBaseAPISetSourceResolution(handle, SOURCE_DPI)
            if lib.TessBaseAPIRecognize(handle, None) != 0:
                raise OcrFailed("libtesseract could not recognise the image")
            pointer = lib.TessBaseAPIGetTsvText(handle, 0)
            try:
                tsv = ctypes.string_at(pointer).decode("utf-8", errors="replace") if pointer else ""
            finally:
                if pointer:
                    lib.TessDeleteText(pointer)
                lib.TessBaseAPIClear(handle)
        return parse_tsv("header\n" + tsv)
