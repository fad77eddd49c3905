/** IEEE half precision: bits → float32 (a table) and float32 → bits (round to nearest even). */

const f16Values = new Float32Array(65536);
{
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const mantissa = bits & 0x3ff;
    if (exponent === 0) f16Values[bits] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) f16Values[bits] = mantissa ? NaN : sign * Infinity;
    else f16Values[bits] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
}

/** The float32 value of f16 bits. */
export function f16Value(bits: number): number {
  return f16Values[bits & 0xffff]!;
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 → f16 bits, round-to-nearest-even, with subnormals, overflow to ±Infinity. */
export function float32ToF16Bits(value: number): number {
  scratchF32[0] = value;
  const bits = scratchU32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let halfExponent = exponent - 127 + 15;
  if (halfExponent >= 31) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    const rounded = roundShift(mantissa, shift);
    return sign | rounded;
  }
  const rounded = roundShift(mantissa, 13);
  // A mantissa that rounds up to 1024 carries into the exponent, which the addition does for us.
  return sign | ((halfExponent << 10) + rounded);
}

function roundShift(value: number, shift: number): number {
  const half = 1 << (shift - 1);
  const truncated = value >>> shift;
  const remainder = value & ((1 << shift) - 1);
  if (remainder > half || (remainder === half && truncated & 1)) return truncated + 1;
  return truncated;
}

