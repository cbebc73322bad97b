from setuptools import find_packages, setup

with open('uiqa_plugin/version.py', encoding='utf-8') as f:
    version = f.read().split("'")[1]

with open('README.md', encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='uiqa-plugin',
    version=version,
    description='CLIP-IQA, CLIP-IQA+ and CLIP-UIQA: image quality and abstract perception with CLIP, as a BasicSR plugin',
    long_description=long_description,
    long_description_content_type='text/markdown',
    packages=find_packages(include=['uiqa_plugin', 'uiqa_plugin.*']),
    include_package_data=True,
    python_requires='>=3.10',
    install_requires=[
        'basicsr>=1.4.2',
        # torch 2.4: torch.serialization.add_safe_globals, so published checkpoints with numpy
        # metadata load with weights_only (uiqa-convert); weights_only loads need torch >= 1.13.
        'torch>=2.4',
        'torchvision',
        # open_clip 2.32: VisionTransformer._pool (our ViT forward); 2.31 fails the ViT tests.
        'open_clip_torch>=2.32',
        'pyyaml',
        'opencv-python',
        'numpy',
        'scipy',
        'lmdb',
        'tensorboard',
        'matplotlib',
        'tqdm',
        'Pillow',
        'scikit-image',
    ],
    extras_require={'test': ['pytest>=7', 'pytest-xdist>=3']},
    entry_points={
        'console_scripts': [
            'uiqa-score=uiqa_plugin.tools.score:main',
            'uiqa-profile=uiqa_plugin.tools.profile:main',
            'uiqa-convert=uiqa_plugin.tools.convert:main',
        ],
    },
)
