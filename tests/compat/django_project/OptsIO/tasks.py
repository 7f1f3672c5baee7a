"""The user guide's Celery example (Example 3), run for real by Herald's tests."""
from celery import shared_task

from OptsIO.ws_utils import ws_send_notification


def process_file(file_path):
    """The "processing logic": count the non-empty lines of a text file."""
    with open(file_path, encoding="utf-8") as f:
        return {"count": sum(1 for line in f if line.strip())}


@shared_task(bind=True)
def process_large_file(self, file_path, username):
    try:
        result = process_file(file_path)
        ws_send_notification(
            username=username,
            message=f'File processed: {result["count"]} records imported',
            notification_type="success",
            title="Processing Complete",
            data=result,
        )
        return result
    except Exception as e:
        ws_send_notification(
            username=username,
            message=f"Error processing file: {str(e)}",
            notification_type="error",
            title="Processing Failed",
        )
        raise
