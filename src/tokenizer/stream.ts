/**
 * Streaming detokenizer: turns generated ids into text deltas whose concatenation is the decoded text,
 * never emitting half a UTF-8 character. Byte-level BPE tokens can split a character across tokens; the
 * decoder then ends in U+FFFD, which is held back until the next token completes it (or the stream ends).
 * As in text-generation-inference, each step decodes a short window starting one token before the
 * unemitted ones, so context-dependent cleanup (" ." → ".") sees its left neighbour.
 */
export class StreamDecoder {
  private readonly ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly decode: (ids: readonly number[]) => string) {}

  /** Add one token; returns the text that became final (possibly ''). */
  push(id: number): string {
    this.ids.push(id);
    return this.emit(false);
  }

  /** End of stream: whatever is held back, incomplete characters included. */
  flush(): string {
    return this.emit(true);
  }

  private emit(final: boolean): string {
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const newText = this.decode(this.ids.slice(this.prefixOffset));
    if (newText.length <= prefixText.length || (!final && newText.endsWith('\uFFFD'))) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return newText.slice(prefixText.length);
  }
}
