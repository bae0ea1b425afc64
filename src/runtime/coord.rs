//! Semaphores, events and deadlock detection (SPEC 3.2, 6).
