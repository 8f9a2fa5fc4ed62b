// AudioWorklet of the live page's microphone: collects the input's first channel (the
// AudioContext runs at 16 kHz, so these are 16 kHz samples) into 100 ms blocks and posts
// each block (Float32Array) to the page, which sends it to /ws/audio as 16-bit PCM.
"use strict";

class MicBlocks extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = (options.processorOptions && options.processorOptions.blockSamples) || 1600;
    this.block = new Float32Array(this.size);
    this.n = 0;
  }

  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch) {
      for (let i = 0; i < ch.length; i++) {
        this.block[this.n++] = ch[i];
        if (this.n === this.size) {
          this.port.postMessage(this.block);
          this.block = new Float32Array(this.size);
          this.n = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("mic-blocks", MicBlocks);
