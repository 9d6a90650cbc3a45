"""Random patches of natural photos, normalised as in the UFLDL sparse autoencoder exercise.

The photos are the ones that ship with installed packages: scikit-learn's
`load_sample_images` (china, flower) and, if scikit-image is installed, any
named `skimage.data` image. Each patch is flattened in (row, column, channel)
order, so a row reshapes to (p, p) or (p, p, 3).

Normalisation (the exercise's `normalizeData`): subtract each patch's own mean,
clip to +-3 standard deviations of all pixel values, divide by 3 std (now in
[-1, 1]), and map to [0.1, 0.9] by (x + 1) * 0.4 + 0.1 so that a sigmoid output
can reach every value.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SparseAEError

SKLEARN_IMAGES = ("china", "flower")
DEFAULT_IMAGES = SKLEARN_IMAGES
# ITU-R BT.601 luma weights.
_GREY = np.array([0.299, 0.587, 0.114])


def load_images(names: Sequence[str] = DEFAULT_IMAGES, channels: int = 1) -> list[tuple[str, np.ndarray]]:
    """The named photos as float64 arrays in [0, 1], shape (H, W) for grey or (H, W, 3) for colour."""
    images = []
    for name in names:
        img = _read_image(name).astype(np.float64)
        img = img / 255.0 if img.max() > 1.0 else img
        if img.ndim == 3:
            img = img[..., :3]  # drop an alpha channel
        if channels == 1 and img.ndim == 3:
            img = img @ _GREY
        elif channels == 3 and img.ndim == 2:
            raise SparseAEError(f"image '{name}' is grey; colour patches (patch_channels 3) need colour images")
        images.append((name, img))
    return images


def _read_image(name: str) -> np.ndarray:
    if name in SKLEARN_IMAGES:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    try:
        import skimage.data
    except ImportError:
        raise SparseAEError(f"unknown image '{name}': scikit-learn has {', '.join(SKLEARN_IMAGES)} "
                            "(other names need scikit-image installed)") from None
    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise SparseAEError(f"unknown image '{name}': not in scikit-learn's samples nor in skimage.data")
    return np.asarray(loader())


def downsample_image(img: np.ndarray, d: int) -> np.ndarray:
    """Mean over d x d pixel blocks (a ragged edge is cut off): fewer JPEG artefacts, more
    structure per patch, as in the down-sampled photos the exercise's IMAGES were made from."""
    if d == 1:
        return img
    h, w = img.shape[0] // d * d, img.shape[1] // d * d
    return img[:h, :w].reshape(h // d, d, w // d, d, *img.shape[2:]).mean(axis=(1, 3))


def whiten_image(img: np.ndarray, f0: float = 0.4) -> np.ndarray:
    """Flatten the 1/f amplitude spectrum of a photo (Olshausen & Field's filter, as used for the
    exercise's IMAGES): multiply the spectrum by f * exp(-(f / f0)^4), f in cycles per pixel
    (f0 = 0.4: Olshausen's 0.4 N cycles per N-pixel picture); the result is scaled to unit
    variance. Colour channels are filtered separately."""
    if img.ndim == 3:
        return np.stack([whiten_image(img[..., c], f0) for c in range(img.shape[2])], axis=-1)
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    out = np.real(np.fft.ifft2(np.fft.fft2(img - img.mean()) * f * np.exp(-(f / f0) ** 4)))
    return out / out.std()


def sample_patches(images: list[tuple[str, np.ndarray]], n: int, size: int,
                   rng: np.random.Generator) -> np.ndarray:
    """`n` random size x size patches (each from a random image at a random place), one per row."""
    for name, img in images:
        if size > min(img.shape[:2]):
            raise SparseAEError(f"patch_size {size} is larger than image '{name}' "
                                f"({img.shape[0]}x{img.shape[1]})")
    which = rng.integers(len(images), size=n)
    rows = []
    for k in range(n):
        img = images[which[k]][1]
        r = rng.integers(img.shape[0] - size + 1)
        c = rng.integers(img.shape[1] - size + 1)
        rows.append(img[r:r + size, c:c + size].reshape(-1))
    return np.stack(rows)


def normalize_patches(patches: np.ndarray, pstd: float | None = None) -> tuple[np.ndarray, float]:
    """The exercise's normalisation; returns (patches in [0.1, 0.9], the 3-std clip level used).

    `pstd` defaults to 3 * std of all values after removing each patch's mean (MATLAB's
    std, N-1 normalised); pass the training value to normalise held-out patches alike.
    """
    centred = patches - patches.mean(axis=1, keepdims=True)
    if pstd is None:
        pstd = 3.0 * float(centred.std(ddof=1))
    if not pstd > 0:
        raise SparseAEError("the patches are constant: nothing to normalise")
    scaled = np.clip(centred, -pstd, pstd) / pstd
    return (scaled + 1.0) * 0.4 + 0.1, pstd
