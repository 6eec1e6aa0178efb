"""Human grading: a web app for blind grading, and the agreement figures it yields."""
