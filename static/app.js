// Copy buttons: copy the named read-only field and say so.
document.addEventListener("click", function (event) {
  var button = event.target.closest(".copy-button");
  if (!button) return;
  var field = document.getElementById(button.dataset.copy);
  if (!field) return;
  field.select();
  var done = function () {
    var label = button.textContent;
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, function () {
      document.execCommand("copy");
      done();
    });
  } else {
    document.execCommand("copy");
    done();
  }
});
