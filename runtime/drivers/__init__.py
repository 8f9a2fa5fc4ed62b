"""Sensor drivers: nodes that publish what a device (or a file standing in for one) records.

- ``engram.runtime.drivers.camera``: the ``Camera`` base (open, read, close), ``OpenCVCamera``
  and the ``CameraSource`` node (type ``camera``) publishing ``Frame`` on ``/frames``.
- ``engram.runtime.drivers.microphone``: the ``Microphone`` base, ``SoundDeviceMicrophone``,
  ``AudioFile`` and the ``MicrophoneSource`` node (type ``microphone``) publishing
  ``AudioChunk`` on ``/audio``.

Importing this package imports nothing else; cv2, sounddevice, soundfile and scipy are
imported only when a source opens.
"""
