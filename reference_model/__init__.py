"""The reference multimodal model (camera image + spoken command -> robot command).

Torch lives here and in ``convert``; the robot runtime (``edge``) never imports it.
"""
