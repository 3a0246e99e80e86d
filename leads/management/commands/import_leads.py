import time

from django.core.management.base import BaseCommand, CommandError

from leads import importer
from leads.models import Form, ImportJob


class ProgressBar:
    """Rows done, the share of the file read, rows/s and the time left, on one line
    rewritten with \\r on a terminal; plain lines (at most every few seconds) otherwise."""

    WIDTH = 30

    def __init__(self, stream, total_bytes, *, interval=None):
        self.stream = stream
        self.total = max(total_bytes, 1)
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.started = time.monotonic()
        self.last = 0.0

    def update(self, rows, bytes_done, *, final=False):
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        share = min(bytes_done / self.total, 1.0)
        rate = rows / elapsed
        eta = elapsed * (1 - share) / share if share > 0 else 0
        estimate = f"/~{round(rows / share):,}" if 0 < share < 1 else ""
        text = (f"{share:4.0%} {rows:,}{estimate} rows · {rate:,.0f} rows/s · "
                f"{'elapsed ' + _duration(elapsed) if final else 'ETA ' + _duration(eta)}")
        if self.tty:
            filled = round(self.WIDTH * share)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {text}\033[K")
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Command(BaseCommand):
    help = (
        "Import leads from a CSV file (UTF-8 or cp1252, ',' or ';' separated) into a form, normalised and "
        "deduplicated like the public endpoint. Streams the file; rejected rows go to <name>.rejected.csv."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="The CSV file.")
        parser.add_argument("--form", help="Slug of the form the leads come from (its source is theirs).")
        parser.add_argument(
            "--map", action="append", default=[], metavar="COLUMN=FIELD",
            help='Send a column to a field, e.g. --map "E-mail=email" --map "Nome=name"; "COLUMN=" ignores it. '
                 "Columns named like a field (any case or accents, English or Portuguese) map by themselves.",
        )
        parser.add_argument(
            "--empty", action="append", default=[], metavar="VALUE",
            help='A placeholder read as empty, e.g. --empty Select --empty "-" (any case or accents).',
        )
        parser.add_argument("--dry-run", action="store_true",
                            help="Read, validate and look the leads up; write nothing and print the report.")
        parser.add_argument("--batch-size", type=int, default=importer.DEFAULT_BATCH_SIZE,
                            help=f"Rows per transaction (default {importer.DEFAULT_BATCH_SIZE}).")
        parser.add_argument("--workers", type=int, default=None,
                            help="Processes that clean rows while this one writes (default: one per core; "
                                 "0: none).")
        parser.add_argument("--job", type=int,
                            help="Run an import job uploaded in admin that no worker took (or whose worker died).")
        parser.add_argument("--retry", action="store_true",
                            help="With --job: run a failed job again, after its last committed line.")
        parser.add_argument("--allow-missing", action="store_true",
                            help="Import even when no column gives a field the form requires (every row would be "
                                 "rejected).")

    def handle(self, *args, file, form, map, empty, dry_run, batch_size, workers, job, retry, allow_missing,
               **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if job is not None:
            return self.run_job(job, batch_size, retry=retry)
        if retry:
            raise CommandError("--retry goes with --job ID.")
        if not file or not form:
            raise CommandError("Give a FILE and --form SLUG (or --job ID).")
        try:
            form = Form.objects.select_related("source").get(slug=form)
        except Form.DoesNotExist as exc:
            raise CommandError(f"No form with the slug {form!r}.") from exc
        overrides = {}
        for item in map:
            column, separator, target = item.partition("=")
            if not separator or not column.strip():
                raise CommandError(f"--map {item!r}: write it as COLUMN=FIELD.")
            overrides[column.strip()] = target.strip()
        try:
            csv_file = importer.CsvFile(file)
            columns = importer.resolve_columns(csv_file.header, form, overrides)
        except importer.ImportFileError as exc:
            raise CommandError(str(exc)) from exc

        self.stdout.write(f"{file}: {csv_file.encoding.replace('-sig', '')}, delimiter {csv_file.delimiter!r}, "
                          f"{csv_file.size:,} bytes → form {form.slug!r} (source {form.source})")
        for name, key in zip(csv_file.header, columns, strict=True):
            self.stdout.write(f"  {name!r} → {key}" if key else f"  {name!r} (ignored)")
        missing = importer.missing_required(form, columns)
        if missing:
            fields = ", ".join(key for key, _label in missing)
            problem = (f"No column gives what form {form.slug!r} requires ({fields}): every row would be rejected. "
                       f"Send a column to it with --map \"COLUMN=FIELD\"")
            if not (dry_run or allow_missing):
                raise CommandError(f"{problem}, or import anyway with --allow-missing.")
            self.stderr.write(f"Warning: {problem}.")
        bar = ProgressBar(self.stderr._out, csv_file.size)
        try:
            report = importer.import_csv(
                path=file, form=form, columns=columns, empty_values=empty, dry_run=dry_run, batch_size=batch_size,
                csv_file=csv_file, workers=workers, on_batch=lambda batch, report, chunk: bar.update(
                    report.rows + batch.rows, chunk.bytes_done),
            )
        except importer.ImportFileError as exc:
            raise CommandError(str(exc)) from exc
        bar.update(report.rows, csv_file.size, final=True)
        self.print_report(report)

    def print_report(self, report):
        write = self.stdout.write
        write("")
        write(f"Dry run of {report.file_name}: nothing was written." if report.dry_run
              else f"Imported {report.file_name}.")
        verb = "would be " if report.dry_run else ""
        write(f"  rows:     {report.rows:,}" + (f" ({report.skipped:,} blank, skipped)" if report.skipped else ""))
        write(f"  created:  {report.created:,} {verb}new leads")
        write(f"  updated:  {report.updated:,} rows {verb}merged into existing leads")
        write(f"  rejected: {report.rejected:,}")
        for line, errors in report.rejected_sample[:20]:
            write(f"    line {line}: {errors}")
        if report.rejected > 20:
            write(f"    … and {report.rejected - 20:,} more")
        if report.rejected_path:
            write(f"  rejected rows written to {report.rejected_path}")
        write(f"  time:     {report.elapsed:.1f} s, {report.rate:,.0f} rows/s")
        if report.per_row_batches:
            write(f"  ({report.per_row_batches} batch(es) redone row by row after a concurrent insert)")

    def run_job(self, job_id, batch_size, *, retry=False):
        try:
            job = ImportJob.objects.get(pk=job_id)
        except ImportJob.DoesNotExist as exc:
            raise CommandError(f"No import job #{job_id}.") from exc
        if job.status == ImportJob.Status.FAILED:
            if not retry:
                raise CommandError(f"Import job #{job_id} failed: {importer.job_error(job)[0]} "
                                   "Add --retry to run it again after its last committed line.")
            importer.import_job_retry(job=job, enqueue=False)
            job.refresh_from_db()
        if job.status not in (ImportJob.Status.PENDING, ImportJob.Status.RUNNING):
            raise CommandError(f"Import job #{job_id} is {job.get_status_display().lower()}: nothing to run.")
        self.stdout.write(f"Import job #{job.pk}: {job.file_name} → form {job.form.slug!r}")
        job = importer.import_job_run(job_id=job_id, worker="manage.py import_leads", batch_size=batch_size,
                                      take_over_stalled=True)
        if job.status == ImportJob.Status.RUNNING:
            raise CommandError(f"Import job #{job_id} is running in a worker that reported progress recently.")
        self.stdout.write(
            f"{job.get_status_display()}: {job.rows_done:,} rows, {job.created_count:,} created, "
            f"{job.updated_count:,} updated, {job.rejected_count:,} rejected"
            + (f" (rejected rows in {job.rejected_path})" if job.rejected_path else "")
        )
