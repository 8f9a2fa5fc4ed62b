"""Speech: voice activity (Silero), recognizers (faster-whisper, openai-whisper) and the
streaming pipeline that turns audio chunks into partial and final transcripts.

- ``engram.perception.speech.recognizers``: ``RecognizerConfig``, ``make_recognizer``,
  ``resolve_model`` (a model name, a path or the offline tiny.en package), ``WhisperModelError``.
- ``engram.perception.speech.vad``: ``SileroVad`` (streaming speech probability) and
  ``SpeechSegmenter`` (speech regions from Silero, sound events from the energy detector).
- ``engram.perception.speech.streaming``: ``SpeechStream`` (segmenter + recognizer worker,
  partial / final ``Utterance``\\ s, end-of-utterance latency) and ``transcribe_audio``.
"""
