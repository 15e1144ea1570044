"""The model contract: what goes into a voxedge model and what comes out, in one place, without torch.

- ``vocabulary``: the reference model's intents and objects, and which intents name an object;
- ``audio``: the microphone rate and the model's window, with units, and cutting a window to length;
- ``image``: a camera frame as the model takes it (size, colour order, layout, batch);
- ``outputs``: the model's outputs as a decision (softmax, command threshold, presence).

The simulator, the reference model, calibration, the converter, the runtime and the service all take
these from here; a bundle's manifest (``edge.bundle``) carries the values a particular model uses.
"""
