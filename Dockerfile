# One image for every process: web, worker and Flower (see compose.yaml and the Procfile).
# Production code only: the sandbox, `up` and the demo stay out (.dockerignore; a unit test
# checks that the web and worker processes import nothing the image leaves out).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY providers ./providers
COPY workers ./workers
COPY webhooks ./webhooks
COPY Procfile ./
RUN pip install --no-cache-dir ".[monitor]" && useradd --system --no-create-home app
USER app
ENV PORT=8000 PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["gunicorn", "-c", "python:webhooks.gunicorn_conf", "webhooks.wsgi:app"]
