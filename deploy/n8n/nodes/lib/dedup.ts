/**
 * Remembers recently accepted delivery ids so a repeated delivery (the relay retries
 * when an answer was lost or slow) does not start a second execution.
 *
 * An id is claimed when a delivery is accepted and kept only once the answer that went
 * back was a 2xx (`settle(id, true)`); otherwise it is forgotten, so the relay's retry
 * of a delivery that failed (for instance a failed run when the trigger answers after
 * the workflow finished) is processed again. While a delivery is in flight a copy is
 * told so (the trigger answers 409 and the relay retries later); that includes a run
 * whose connection the relay closed before any answer (its timeout ran out while the
 * run went on), until the run answers or the window passes.
 *
 * Memory only, per n8n process: a restart forgets, and n8n in queue mode with several
 * webhook processes does not share it. The bound on entries keeps a flood from growing
 * memory without limit (the oldest are dropped first).
 */
export type Claim = 'new' | 'duplicate' | 'in-flight';

interface Entry {
	state: 'in-flight' | 'done';
	at: number;
}

export class RecentIds {
	private readonly entries = new Map<string, Entry>();

	constructor(
		private windowSeconds: number,
		private readonly maxEntries = 10000,
	) {}

	/** The window may change when the node's settings do; it applies from now on. */
	setWindow(windowSeconds: number): void {
		this.windowSeconds = windowSeconds;
	}

	get size(): number {
		return this.entries.size;
	}

	claim(id: string, now: number): Claim {
		this.prune(now);
		const entry = this.entries.get(id);
		if (entry?.state === 'done') return 'duplicate';
		if (entry?.state === 'in-flight') return 'in-flight';
		this.entries.set(id, { state: 'in-flight', at: now });
		while (this.entries.size > this.maxEntries) {
			const oldest = this.entries.keys().next().value;
			if (oldest === undefined) break;
			this.entries.delete(oldest);
		}
		return 'new';
	}

	/** After the answer went out: keep the id for the window on success, forget it otherwise. */
	settle(id: string, delivered: boolean, now: number): void {
		const entry = this.entries.get(id);
		if (entry === undefined || entry.state !== 'in-flight') return;
		if (delivered) {
			// Re-insert so the Map's order stays oldest-first by completion time.
			this.entries.delete(id);
			this.entries.set(id, { state: 'done', at: now });
		} else {
			this.entries.delete(id);
		}
	}

	private prune(now: number): void {
		for (const [id, entry] of this.entries) {
			// An in-flight entry older than the window lost its answer (a crashed
			// execution); forget it rather than answering 409 forever.
			if (now - entry.at > this.windowSeconds) this.entries.delete(id);
		}
	}
}
