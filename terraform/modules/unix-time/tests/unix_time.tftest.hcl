# Reference values computed with `date -u -d TIMESTAMP +%s`.

run "epoch" {
  command = plan
  variables {
    timestamp = "1970-01-01T00:00:00Z"
  }
  assert {
    condition     = output.seconds == 0
    error_message = "1970-01-01T00:00:00Z must be 0, got ${output.seconds}"
  }
}

run "leap_day" {
  command = plan
  variables {
    timestamp = "2000-02-29T12:34:56Z"
  }
  assert {
    condition     = output.seconds == 951827696
    error_message = "got ${output.seconds}"
  }
}

run "end_of_a_leap_year" {
  command = plan
  variables {
    timestamp = "2024-12-31T23:59:59Z"
  }
  assert {
    condition     = output.seconds == 1735689599
    error_message = "got ${output.seconds}"
  }
}

run "march_after_a_common_february" {
  command = plan
  variables {
    timestamp = "2025-03-01T00:00:00Z"
  }
  assert {
    condition     = output.seconds == 1740787200
    error_message = "got ${output.seconds}"
  }
}

run "century_that_is_not_leap" {
  command = plan
  variables {
    timestamp = "2100-03-01T00:00:00Z"
  }
  assert {
    condition     = output.seconds == 4107542400
    error_message = "got ${output.seconds}"
  }
}

run "rejects_an_offset" {
  command = plan
  variables {
    timestamp = "2025-11-21T19:00:00+02:00"
  }
  expect_failures = [var.timestamp]
}

run "rejects_an_impossible_date" {
  command = plan
  variables {
    timestamp = "2025-02-30T00:00:00Z"
  }
  expect_failures = [var.timestamp]
}
