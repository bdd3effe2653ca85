#!/usr/bin/env python
"""rlfn-basicsr: a trainable RLFN (Residual Local Feature Network) as a BasicSR plugin."""
from setuptools import find_packages, setup

setup(
    name='rlfn-basicsr',
    version='0.1.0',
    description='Trainable RLFN (Kong et al., CVPRW 2022) for BasicSR: architecture, contrastive loss, '
    'multi-stage warm-start training, data preparation, inference and export',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['rlfn_arch', 'rlfn_arch.*']),
    # the models that ship (rlfn_arch/archs/zoo.py): weights and their model cards
    package_data={'rlfn_arch.archs': ['weights/*.safetensors', 'weights/*.json']},
    entry_points={'console_scripts': ['rlfn = rlfn_arch.cli:main']},
    python_requires='>=3.9',
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.6',  # 2.6+: torch.load defaults to weights_only=True (also in basicsr's SRModel)
        'torchvision>=0.21',
        'numpy',
        'opencv-python',
        'lmdb',
        'pyyaml',
        'scikit-image',
        'tqdm',
        'Pillow',
        'safetensors>=0.4',  # binary wheels; reading never unpickles
    ],
    extras_require={
        # the export / int8 tests run ONNX Runtime and OpenVINO, so the test extra includes both extras
        'test': ['pytest>=7', 'pytest-xdist>=3', 'hypothesis>=6', 'ruff>=0.4', 'onnx>=1.14', 'onnxruntime>=1.18',
                 'onnxscript', 'onnxconverter-common', 'spandrel==0.4.2', 'matplotlib>=3.5', 'openvino>=2024.0'],
        # int8 from a quantization-aware checkpoint writes its scales with TensorQuantOverrides (onnxruntime 1.18+)
        'export': ['onnx>=1.14', 'onnxruntime>=1.18', 'onnxscript', 'onnxconverter-common'],
        # the second CPU runtime (--runtime openvino in infer / test / benchmark; benchmarks/inference_cpu.py)
        'openvino': ['openvino>=2024.0', 'onnx>=1.14'],
        # chaiNNer / ComfyUI's loader; 0.4.2 is a pure-Python wheel (rlfn_arch.integrations.spandrel)
        'spandrel': ['spandrel==0.4.2'],
        # the training-curves plot written at the end of every run (training/curves.py)
        'plot': ['matplotlib>=3.5'],
    },
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
