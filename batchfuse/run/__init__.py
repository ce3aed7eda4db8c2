"""Running a job: the composition root, scheduler, recorder, pacing, breaker, budget and retry."""
