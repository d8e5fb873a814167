/**
 * Seeded pseudo-random numbers: xoshiro128** (Blackman and Vigna, "Scrambled linear
 * pseudorandom number generators", 2021) seeded through splitmix32. The project's one seeded
 * generator: decoding, head training, test fixtures and synthetic model weights all draw from it.
 *
 * Every random draw the engine makes (draft samples, acceptance tests, residual and bonus
 * samples) comes from one `Rng` per generation, in a fixed order, so a seed reproduces a
 * generation exactly. Likewise the same seed gives the same fixture and synthetic weights.
 */
export class Rng {
  private spare: number | undefined;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const splitmix = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    // Mix in the high bits of seeds above 2^32 so nearby large seeds differ.
    const hi = Math.floor(seed / 0x100000000) >>> 0;
    this.s0 = splitmix();
    this.s1 = splitmix() ^ hi;
    this.s2 = splitmix();
    this.s3 = splitmix();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** A random seed for requests that give none. */
  static randomSeed(): number {
    return Math.floor(Math.random() * 0x100000000);
  }

  /** Next 32 random bits as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform float in [0, 1) with 32 random bits (one draw): enough for float32 data, twice as fast as `next`. */
  next32(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.next()));
    const a = 2 * Math.PI * this.next();
    this.spare = r * Math.sin(a);
    return r * Math.cos(a);
  }

  /** `n` normals times `std`, plus `mean` // [n] */
  normals(n: number, std: number, mean = 0): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = mean + std * this.normal();
    return out;
  }

  /**
   * `n` values uniform with standard deviation `std` around `mean` (half-width std * sqrt(3)),
   * one 32-bit draw each (`next32`) // [n]
   */
  uniforms(n: number, std: number, mean = 0): Float32Array {
    const out = new Float32Array(n);
    const half = std * Math.sqrt(3);
    for (let i = 0; i < n; i++) out[i] = mean + (2 * this.next32() - 1) * half;
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
